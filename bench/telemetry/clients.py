"""Websocket clients of the live GPU overview, and the latencies they observe.

Each client logs in with the benchmark's session cookie, sends the Origin a browser
would, skips the full resync it gets on connect and then, while the window is open,
records ``receive time - data-sampled`` for every GPU row of every ``node.gpus``
fragment that belongs to one of the benchmark's nodes (same machine, same clock).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.typing import Origin

ROW_SAMPLED = re.compile(r'data-sampled="([0-9.]+)"')
GPU_TBODY = re.compile(r'<tbody id="node-([0-9a-f-]+)-gpus"')


@dataclass
class Collector:
    """What all clients saw; the window is open while ``measuring`` is true."""

    node_ids: frozenset[str]
    measuring: bool = False
    connected: int = 0
    latencies: list[float] = field(default_factory=list)
    node_messages: int = 0
    other_messages: int = 0
    foreign_messages: int = 0
    resync_seconds: list[float] = field(default_factory=list)
    resync_bytes: int = 0
    message_bytes: int = 0
    other_bytes: int = 0
    closed: list[str] = field(default_factory=list)

    def on_message(self, text: str, received: float) -> None:
        if not self.measuring:
            return
        bodies = GPU_TBODY.findall(text)
        if len(bodies) != 1:  # alerts, banner, or a whole-fleet re-render: not a tick
            self.other_messages += 1
            self.other_bytes += len(text)
            return
        if bodies[0] not in self.node_ids:  # another web process's node on shared Redis
            self.foreign_messages += 1
            return
        self.node_messages += 1
        self.message_bytes += len(text)
        self.latencies.extend(received - float(value) for value in ROW_SAMPLED.findall(text))


@dataclass(frozen=True)
class Target:
    url: str
    origin: str
    session_key: str


async def run_client(target: Target, collector: Collector) -> None:
    """One browser tab: connect, take the resync, then record every fragment until
    cancelled."""
    started = time.monotonic()
    async with connect(
        target.url,
        origin=Origin(target.origin),
        additional_headers={"Cookie": f"sessionid={target.session_key}"},
        max_size=None,
        open_timeout=60,
        ping_interval=None,  # browsers do not ping; daphne pings them
    ) as ws:
        resync = await asyncio.wait_for(ws.recv(), timeout=60)
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
