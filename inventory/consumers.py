"""The fleet websocket: a full resync on connect, then the fragments events change.

The overview's own sockets take their fragments from the process's ``inventory.fanout``
hub (rendered once per process, whatever the number of browsers; filtered by the
socket's query string, GPU rows only for the nodes its browser shows expanded, which it
says in ``{"nodes": <gf_nodes cookie value>}`` messages). Subclasses that override
``render_event`` get every event of the ``fleet`` group and render per socket.

A socket lives only as long as its login session: see ``inventory.sessions``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from core.access import can_operate
from inventory import events, fanout, live, sessions
from inventory.fleet_view import COOKIE, OpenNodes, OverviewFilter

# Seconds between checks that the session still exists, is unexpired and still valid.
RECHECK_EVERY = 2.0
# The close code once the session has ended: the page reloads and lands on the login.
SESSION_ENDED = 4401


class FleetConsumer(AsyncWebsocketConsumer):
    """The overview's socket; pages with other live parts subclass it and override the two
    ``render_*`` methods (run in a thread: they may read the database)."""

    operator = False
    view = OverviewFilter()
    open_nodes = OpenNodes()

    @property
    def per_socket(self) -> bool:
        """A page of its own (a subclass rendering events itself), not the overview."""
        return type(self).render_event is not FleetConsumer.render_event

    def render_resync(self) -> str:
        return live.render_resync(self.view, self.open_nodes)

    def render_event(self, event: events.Event) -> str:
        return live.render_event(event)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=SESSION_ENDED)
            return
        self.user_id = user.pk
        session = self.scope.get("session")
        self.session_key: str | None = session.session_key if session is not None else None
        self.groups = [sessions.user_group(user.pk)]
        if self.per_socket:
            self.groups.append(events.GROUP)
        if self.session_key:
            self.groups.append(sessions.session_group(self.session_key))
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.operator = await database_sync_to_async(can_operate)(user)
        await self.accept()
        self.watcher = asyncio.create_task(self.watch_session())
        events.relay.ensure_started()
        await self._resync()

    async def _resync(self) -> None:
        if self.per_socket:
            await self.send(text_data=await database_sync_to_async(self.render_resync)())
            return
        self.view = OverviewFilter.parse(_query(self.scope))
        self.open_nodes = OpenNodes.parse(self.scope.get("cookies", {}).get(COOKIE))
        hub = self.hub = fanout.hub()
        await hub.add(self)
        # Off the one sync thread: a storm of reconnects (a restarted web process) must
        # not hold up the handshakes of the sockets behind it.
        await self.send(text_data=await events.in_thread(self.render_resync))
        hub.ready(self)

    async def disconnect(self, code: int) -> None:
        watcher: asyncio.Task[None] | None = getattr(self, "watcher", None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for group in getattr(self, "groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        hub: fanout.Hub | None = getattr(self, "hub", None)
        if hub is not None:
            await hub.remove(self)

    async def session_is_live(self) -> bool:
        return bool(
            await database_sync_to_async(sessions.session_is_live)(self.session_key, self.user_id)
        )

    async def end_session(self) -> None:
        self.ended = True
        await self.close(code=SESSION_ENDED)

    async def watch_session(self) -> None:
        """Close the socket within ``RECHECK_EVERY`` of its session ending anywhere."""
        while True:
            await asyncio.sleep(RECHECK_EVERY)
            if not await self.session_is_live():
                await self.end_session()
                return

    async def session_close(self, message: dict[str, Any]) -> None:
        """This socket's session logged out (sent by ``inventory.sessions``)."""
        await self.end_session()

    async def session_check(self, message: dict[str, Any]) -> None:
        """The user's password or active flag changed: is this session still valid?"""
        if not await self.session_is_live():
            await self.end_session()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The overview's browser says which nodes it shows expanded (``{"nodes": …}``,
        the ``gf_nodes`` cookie's value): the nodes that opened or closed are sent back.
        Anything else, and anything sent to other pages, is ignored."""
        if self.per_socket or getattr(self, "hub", None) is None:
            return
        nodes = _nodes_message(text_data)
        if nodes is None:
            return
        before, self.open_nodes = self.open_nodes, OpenNodes.parse(nodes)
        html = await events.in_thread(_render_toggled, before, self.open_nodes, self.view)
        if html:
            await self.send(text_data=html)

    async def fleet_event(self, message: dict[str, Any]) -> None:
        if getattr(self, "ended", False):
            return
        if not self.per_socket:  # sent to this socket alone (the hub takes the group's)
            fanout.hub().post(message["event"])
            return
        html = await database_sync_to_async(self.render_event)(message["event"])
        if html:
            await self.send(text_data=html)


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
