"""The overview's live push: each event rendered once per process, then fanned out.

One ``Hub`` per web process (per event loop, while an overview socket is open) takes
every fleet event once, not once per browser: from the outbox relay (embedded default)
or from its own channel in the ``fleet`` group (cluster). It gathers them for
``FLUSH_EVERY`` seconds (the latest GPU rows of a node win), then in one worker-thread
call updates its copy of the fleet and renders each changed fragment once:

* a node's one-line summary (``node-…-line``), at most every ``LINE_EVERY`` seconds
  and only if it reads differently (200 lines a second would be most of the bytes);
* its GPU rows (``node-…-gpus``), only if some browser shows that node expanded;
* its whole section, only when its header or what the filters look at changed
  (status, alerts, a GPU missing or in error, its GPU models);
* the fleet summary, at most once per ``SUMMARY_EVERY`` (at once after a structural
  change); the alert, maintenance and cold-start panels once per flush.

Browsers are grouped by view (filter + expanded nodes): one message per view is joined
from those fragments (nodes a view filters out are skipped, collapsed ones get their
line only) and the same string is sent to every socket of the view, straight from the
event loop (no thread hop per socket)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from core.events import GROUP, Event, in_thread
from core.fragments import frames
from inventory import live
from inventory.fleet_view import OpenNodes, OverviewFilter
from inventory.presenters import GpuRow

FLUSH_EVERY = 0.25  # seconds at least between the starts of two flushes
GATHER = 0.02  # after the first event of a quiet spell: the rest of its burst
SUMMARY_EVERY = 1.0  # the fleet summary changes with every tick; send it once a second
LINE_EVERY = 5.0  # a node's one-line summary: what a collapsed node shows
PANEL_KINDS = ("alerts.changed", "maintenance.changed", "deployment.changed")
STRUCTURE_KINDS = ("node.status", "gpu.settings", "alerts.changed")
logger = logging.getLogger(__name__)

ViewKey = tuple[OverviewFilter, OpenNodes]


class Viewer(Protocol):
    """An overview socket (``inventory.consumers.FleetConsumer``)."""

    view: OverviewFilter
    open_nodes: OpenNodes

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None: ...


def view_key(viewer: Viewer) -> ViewKey:
    return (viewer.view, viewer.open_nodes)


@dataclass
class Batch:
    """Events gathered between two flushes."""

    rows: dict[str, list[GpuRow]] = field(default_factory=dict)
    gpu_rows: list[GpuRow] = field(default_factory=list)
    structure: bool = False
    panels: dict[str, Event] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        kind = event.get("kind", "")
        if kind == "node.gpus":
            self.rows[event["node_id"]] = event["rows"]  # type: ignore[assignment]
        elif kind == "gpu.settings":
            self.gpu_rows.extend(event.get("rows", []))  # type: ignore[arg-type]
        self.structure = self.structure or kind in STRUCTURE_KINDS
        if kind in PANEL_KINDS:
            self.panels[kind] = event

    def __bool__(self) -> bool:
        return bool(self.rows or self.gpu_rows or self.structure or self.panels)


class Renderer:
    """The hub's copy of the fleet and the fragments of one flush. Runs in a worker
    thread, one flush at a time."""

    def __init__(self, after_failure: bool = False) -> None:
        self.after_failure = after_failure  # send every view the whole list once
        self.fleet: live.Fleet | None = None
        self.keys: dict[str, tuple[Any, ...]] = {}
        self.lines: dict[str, str] = {}
        self.line_at: dict[str, float] = {}
        self.summary_html = ""
        self.summary_at = 0.0
        self.summary_dirty = False
        self.renders = 0  # fragments rendered (what the tests count)

    def flush(self, batch: Batch, views: list[ViewKey], now: float) -> dict[ViewKey, list[str]]:
        fresh = self.fleet is None
        fleet = self._fleet()
        before = list(fleet.facts)
        if batch.structure or any(node_id not in fleet.facts for node_id in batch.rows):
            self._reload_facts(fleet)
        self._apply(fleet, batch)
        flush = _Flush(self, fleet, views, now)
        if list(fleet.facts) != before or self.after_failure:
            flush.whole, self.after_failure = True, False
        else:
            flush.structural = [i for i in fleet.facts if self._key(fleet, i) != self.keys.get(i)]
            flush.updated = [i for i in batch.rows if i in fleet.facts]
        self.keys = {node_id: self._key(fleet, node_id) for node_id in fleet.facts}
        structural = fresh or batch.structure or flush.whole
        flush.common = [
            *self._panels(batch),
            self._summary(fleet, structural, bool(batch.rows), now),
        ]
        return flush.messages()

    def load(self) -> None:
        """Read the fleet as the sockets' resyncs are about to show it."""
        self._fleet()
        self.summary_at = time.monotonic()  # the resyncs carry a fresh summary

    def _fleet(self) -> live.Fleet:
        if self.fleet is None:
            self.fleet = live.Fleet.load()
            self.keys = {node_id: self._key(self.fleet, node_id) for node_id in self.fleet.facts}
        return self.fleet

    def _reload_facts(self, fleet: live.Fleet) -> None:
        fleet.facts, fleet.alerts = live.load_facts()
        new = [node_id for node_id in fleet.facts if node_id not in fleet.rows]
        if new:
            fleet.rows.update(live.load_rows(new))
        for node_id in [node_id for node_id in fleet.rows if node_id not in fleet.facts]:
            del fleet.rows[node_id]
            fleet.lines.pop(node_id, None)

    def _apply(self, fleet: live.Fleet, batch: Batch) -> None:
        for node_id, rows in batch.rows.items():
            if node_id in fleet.facts:
                fleet.set_rows(node_id, rows)
        for changed in batch.gpu_rows:
            rows = fleet.rows.get(changed["node_id"], [])
            merged = [changed if row["id"] == changed["id"] else row for row in rows]
            fleet.set_rows(changed["node_id"], merged)

    @staticmethod
    def _key(fleet: live.Fleet, node_id: str) -> tuple[Any, ...]:
        """What a node's section shows apart from its line and rows, and what the
        filters look at: a change re-renders the whole section."""
        line = fleet.line(node_id)
        return (*fleet.facts[node_id].values(), line["problems"] > 0, line["models"])

    def _panels(self, batch: Batch) -> list[str]:
        html = [
            live.render_panel(batch.panels[kind]) for kind in PANEL_KINDS if kind in batch.panels
        ]
        self.renders += len(html)
        return html

    def _summary(self, fleet: live.Fleet, structural: bool, ticked: bool, now: float) -> str:
        self.summary_dirty = self.summary_dirty or ticked
        if not (structural or (self.summary_dirty and now - self.summary_at >= SUMMARY_EVERY)):
            return ""
        self.summary_at, self.summary_dirty = now, False
        html = live.render_summary(fleet.summary())
        self.renders += 1
        if html == self.summary_html:
            return ""
        self.summary_html = html
        return html


class _Flush:
    """One flush's fragments, each rendered at most once, joined per view."""

    def __init__(
        self, renderer: Renderer, fleet: live.Fleet, views: list[ViewKey], now: float
    ) -> None:
        self.renderer, self.fleet, self.views, self.now = renderer, fleet, views, now
        self.whole = False
        self.structural: list[str] = []
        self.updated: list[str] = []
        self.common: list[str] = []
        self.memo: dict[Any, str] = {}

    def _once(self, key: Any, render: Any, *args: Any) -> str:
        if key not in self.memo:
            self.memo[key] = render(*args)
            self.renderer.renders += 1
        return self.memo[key]

    def messages(self) -> dict[ViewKey, list[str]]:
        """Each view's frames (``core.fragments``: its GPU rows parse as rows)."""
        messages = {key: frames([*self.common, *self._nodes(key)]) for key in self.views}
        return {key: sent for key, sent in messages.items() if sent}

    def _nodes(self, key: ViewKey) -> list[str]:
        if self.whole:
            return [self._once(("fleet", key), live.render_fleet, self.fleet, *key)]
        parts = [self._section(node_id, key) for node_id in self.structural]
        structural = set(self.structural)
        for node_id in self.updated:
            if node_id not in structural:
                parts.extend(self._tick(node_id, key))
        return parts

    def _section(self, node_id: str, key: ViewKey) -> str:
        entry = self.fleet.entry(node_id, *key)
        return self._once(
            ("node", node_id, entry["visible"], entry["open"]), live.render_node, entry
        )

    def _tick(self, node_id: str, key: ViewKey) -> list[str]:
        view, open_nodes = key
        facts, line = self.fleet.facts[node_id], self.fleet.line(node_id)
        if not view.matches(facts, line):
            return []
        parts = [self._line(node_id)]
        if open_nodes.is_open(facts["short"], len(self.fleet.facts)):
            rows = self.fleet.rows.get(node_id, [])
            parts.append(self._once(("rows", node_id), live.render_rows, node_id, rows))
        return parts

    def _line(self, node_id: str) -> str:
        """The node's line if it is due and reads differently from the one sent before."""
        key = ("line", node_id)
        if (
            key not in self.memo
            and self.now - self.renderer.line_at.get(node_id, -1e9) < LINE_EVERY
        ):
            self.memo[key] = ""
        if key not in self.memo:
            self.renderer.line_at[node_id] = self.now
            html = self._once(
                key, live.render_line, self.fleet.facts[node_id], self.fleet.line(node_id)
            )
            if self.renderer.lines.get(node_id) == html:
                self.memo[key] = ""
            self.renderer.lines[node_id] = html
        return self.memo[key]


class Hub:
    """See the module docstring. Lives on one event loop while overview sockets are open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.viewers: dict[Viewer, bool] = {}  # socket → has had its resync
        self.batch = Batch()
        self.renderer = Renderer()
        self.flusher: asyncio.Task[None] | None = None
        self.listener: asyncio.Task[None] | None = None
        self.channel: str | None = None
        self.stopped = False
        self.flushes = 0
        self.flushed_at = 0.0
        self.lock = asyncio.Lock()  # one worker-thread call on the renderer at a time
        if settings.REDIS_URL:
            self.listener = loop.create_task(self._listen())

    async def add(self, viewer: Viewer) -> None:
        """Register a socket before its resync is read: the hub's copy of the fleet is
        read first, so that what changes after it is pushed, not taken for the start."""
        self.viewers[viewer] = False
        async with self.lock:
            if self.renderer.fleet is None:
                await in_thread(self.renderer.load)

    def ready(self, viewer: Viewer) -> None:
        """The socket has its resync: from now on it gets the pushes."""
        if viewer in self.viewers:
            self.viewers[viewer] = True

    async def remove(self, viewer: Viewer) -> None:
        self.viewers.pop(viewer, None)
        if not self.viewers:
            await self.stop()

    def post(self, event: Event) -> None:
        self.batch.add(event)
        if self.flusher is None or self.flusher.done():
            self.flusher = self.loop.create_task(self._flushes())

    async def _flushes(self) -> None:
        """Flush at most every ``FLUSH_EVERY`` while events come, once more for a
        summary held back, then end (the next event starts it again)."""
        await asyncio.sleep(max(GATHER, self.flushed_at + FLUSH_EVERY - time.monotonic()))
        while True:
            started = self.flushed_at = time.monotonic()
            await self._flush()
            if self.batch:
                wait = FLUSH_EVERY
            elif self.renderer.summary_dirty:
                wait = SUMMARY_EVERY
            else:
                return
            await asyncio.sleep(max(0.0, started + wait - time.monotonic()))

    async def _flush(self) -> None:
        batch, self.batch = self.batch, Batch()
        views = list({view_key(v) for v, ready in self.viewers.items() if ready})
        try:
            async with self.lock:
                messages = await in_thread(self.renderer.flush, batch, views, time.monotonic())
        except Exception:
            logger.exception("overview push: a flush failed; the fleet is read again next time")
            self.renderer = Renderer(after_failure=True)
            return
        self.flushes += 1
        for viewer, ready in list(self.viewers.items()):
            for frame in messages.get(view_key(viewer), []) if ready else []:
                with contextlib.suppress(Exception):  # a socket closing meanwhile
                    await viewer.send(text_data=frame)

    async def _listen(self) -> None:
        """Cluster: this process's one copy of every event of the ``fleet`` group."""
        layer = get_channel_layer()
        assert layer is not None
        while True:
            try:
                if self.channel is None:
                    self.channel = await layer.new_channel()
                    await layer.group_add(GROUP, self.channel)
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarting: join the group again once it is back
                logger.warning("overview push: the channel layer failed; retrying", exc_info=True)
                self.channel = None
                await asyncio.sleep(1.0)
                continue
            if message.get("type") == "fleet.event":
                self.post(message["event"])

    async def stop(self) -> None:
        self.stopped = True
        for task in (self.listener, self.flusher):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        layer = get_channel_layer()
        if self.channel is not None and layer is not None:
            with contextlib.suppress(Exception):
                await layer.group_discard(GROUP, self.channel)


_hub: Hub | None = None


def hub() -> Hub:
    """This process's hub on the running loop (a new one after the last stopped)."""
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.stopped or _hub.loop is not loop:
        _hub = Hub(loop)
    return _hub


def post(event: Event) -> None:
    """Hand an event to the hub of the running loop, if an overview socket is open."""
    with contextlib.suppress(RuntimeError):
        loop = asyncio.get_running_loop()
        if _hub is not None and not _hub.stopped and _hub.loop is loop:
            _hub.post(event)
