"""Websocket clients of the live GPU overview, and the latencies they observe.

Each client logs in with the benchmark's session cookie (plus, for a large fleet, the
``gf_nodes`` cookie naming the nodes it shows expanded), sends the Origin a browser
would, skips the full resync it gets on connect and then, while the window is open,
records for every message (which may carry many nodes' fragments):

* ``receive time - data-sampled`` of every GPU row (``<tbody id="node-…-gpus">`` of one
  of the benchmark's nodes; same machine, same clock);
* the same for every node's one-line summary (``node-…-line``), what a collapsed node
  shows;
* messages that carry a whole node section or the whole fleet ("structural").
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.typing import Origin

ROW_SAMPLED = re.compile(r'<tr id="gpu-[^"]+" class="[^"]*" data-sampled="([0-9.]+)"')
GPU_TBODY = re.compile(r'<tbody id="node-([0-9a-f-]+)-gpus"[^>]*>(.*?)</tbody>', re.S)
LINE = re.compile(r'id="node-([0-9a-f-]+)-line" data-sampled="([0-9.]+)"')
STRUCTURAL = re.compile(r'<section class="node|<div id="fleet"')


@dataclass
class Collector:
    """What all clients saw; the window is open while ``measuring`` is true."""

    node_ids: frozenset[str]
    measuring: bool = False
    connected: int = 0
    latencies: list[float] = field(default_factory=list)
    line_latencies: list[float] = field(default_factory=list)
    messages: int = 0
    node_messages: int = 0  # GPU row fragments (one node's tbody)
    other_messages: int = 0  # messages with a node section or the whole fleet
    foreign_messages: int = 0
    resync_seconds: list[float] = field(default_factory=list)
    resync_bytes: int = 0
    message_bytes: int = 0
    other_bytes: int = 0
    closed: list[str] = field(default_factory=list)

    def on_message(self, text: str, received: float) -> None:
        if not self.measuring:
            return
        self.messages += 1
        self.message_bytes += len(text)
        if STRUCTURAL.search(text):
            self.other_messages += 1
            self.other_bytes += len(text)
        for node_id, body in GPU_TBODY.findall(text):
            if node_id not in self.node_ids:  # another web process's node on shared Redis
                self.foreign_messages += 1
                continue
            self.node_messages += 1
            self.latencies.extend(received - float(value) for value in ROW_SAMPLED.findall(body))
        for node_id, sampled in LINE.findall(text):
            if node_id in self.node_ids:
                self.line_latencies.append(received - float(sampled))


@dataclass(frozen=True)
class Target:
    url: str
    origin: str
    session_key: str


async def run_client(target: Target, collector: Collector, nodes_cookie: str = "") -> None:
    """One browser tab: connect, take the resync, then record every message until
    cancelled."""
    started = time.monotonic()
    cookie = f"sessionid={target.session_key}"
    if nodes_cookie:
        cookie += f"; gf_nodes={nodes_cookie}"
    async with connect(
        target.url,
        origin=Origin(target.origin),
        additional_headers={"Cookie": cookie},
        max_size=None,
        open_timeout=60,
        ping_interval=None,  # browsers do not ping; daphne pings them
    ) as ws:
        resync = await asyncio.wait_for(ws.recv(), timeout=120)
        collector.resync_seconds.append(time.monotonic() - started)
        collector.resync_bytes = len(resync)
        collector.connected += 1
        try:
            async for message in ws:
                received = time.time()
                if isinstance(message, str):
                    collector.on_message(message, received)
        finally:
            if ws.close_code is not None and collector.measuring:
                collector.closed.append(f"code {ws.close_code} {ws.close_reason}".strip())


async def wait_connected(
    collector: Collector, tasks: list[asyncio.Task[None]], timeout: float
) -> None:
    """Until every client has its resync; raise if one fails or time runs out."""
    deadline = time.monotonic() + timeout
    while collector.connected < len(tasks):
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"a websocket client failed: {task.exception()!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {collector.connected}/{len(tasks)} clients connected")
        await asyncio.sleep(0.1)


async def stop_clients(tasks: list[asyncio.Task[None]], timeout: float = 15.0) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
