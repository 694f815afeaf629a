"""The overview's websocket (``/ws/fleet/``).

Its sockets take their fragments from the process's ``inventory.fanout`` hub (rendered
once per process, whatever the number of browsers; filtered by the socket's query string,
GPU rows only for the nodes its browser shows expanded, which it says in
``{"nodes": <gf_nodes cookie value>}`` messages). Sessions, resync and the rest of a
live socket's life: ``core.consumers``."""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import parse_qs

from core import events
from core.consumers import LiveConsumer
from inventory import fanout, live
from inventory.fleet_view import COOKIE, OpenNodes, OverviewFilter


class FleetConsumer(LiveConsumer):
    """The overview's socket: the hub, not the ``fleet`` group, brings it events."""

    joins_fleet_group = False
    view = OverviewFilter()
    open_nodes = OpenNodes()

    def render_resync(self) -> str:
        return live.render_resync(self.view, self.open_nodes)

    async def resync(self) -> None:
        self.view = OverviewFilter.parse(_query(self.scope))
        self.open_nodes = OpenNodes.parse(self.scope.get("cookies", {}).get(COOKIE))
        hub = self.hub = fanout.hub()
        await hub.add(self)
        # Off the one sync thread: a storm of reconnects (a restarted web process) must
        # not hold up the handshakes of the sockets behind it.
        await self.send(text_data=await events.in_thread(self.render_resync))
        hub.ready(self)

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        hub: fanout.Hub | None = getattr(self, "hub", None)
        if hub is not None:
            await hub.remove(self)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The browser says which nodes it shows expanded (``{"nodes": …}``, the
        ``gf_nodes`` cookie's value): the nodes that opened or closed are sent back.
        Anything else is ignored."""
        if getattr(self, "hub", None) is None:
            return
        nodes = _nodes_message(text_data)
        if nodes is None:
            return
        before, self.open_nodes = self.open_nodes, OpenNodes.parse(nodes)
        html = await events.in_thread(_render_toggled, before, self.open_nodes, self.view)
        if html:
            await self.send(text_data=html)

    async def fleet_event(self, message: dict[str, Any]) -> None:
        """An event sent to this socket alone (the hub takes the group's)."""
        if not getattr(self, "ended", False):
            fanout.hub().post(message["event"])


def _query(scope: dict[str, Any]) -> dict[str, str]:
    raw = scope.get("query_string", b"")
    pairs = parse_qs(raw.decode("latin-1") if isinstance(raw, bytes) else str(raw))
    return {key: values[-1] for key, values in pairs.items()}


def _nodes_message(text: str | None) -> str | None:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        value = json.loads(text or "").get("nodes")
        return value if isinstance(value, str) and len(value) < 4096 else None
    return None


def _render_toggled(before: OpenNodes, after: OpenNodes, view: OverviewFilter) -> str:
    return live.render_nodes(live.toggled_nodes(before, after), view, after)
