"""The base of every live page's websocket: a full resync on connect, then the fragments
each fleet event changes, rendered by the page (``render_resync``, ``render_event``).

A socket lives only as long as its login session: it joins a group for its session and
one for its user (see ``core.sessions``) and re-checks the session every
``RECHECK_EVERY`` seconds."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from core import events, sessions
from core.access import can_operate
from core.fragments import frames

# Seconds between checks that the session still exists, is unexpired and still valid.
RECHECK_EVERY = 2.0
# The close code once the session has ended: the page reloads and lands on the login.
SESSION_ENDED = 4401


# What a page renders: out-of-band fragments, joined or one per element (``frames``
# sends table parts so that they parse: see ``core.fragments``); "" or [] for nothing.
Rendered = str | list[str]


class LiveConsumer(AsyncWebsocketConsumer):
    """A live page's socket. Subclasses render (both run in a worker thread: they may
    read the database); ``render_event`` gets every event of the ``fleet`` group and
    returns the out-of-band fragments to send, or ``""``."""

    operator = False
    # Join the ``fleet`` group: every event comes to this socket's ``fleet_event``.
    joins_fleet_group = True

    def render_resync(self) -> Rendered:
        raise NotImplementedError

    def render_event(self, event: events.Event) -> Rendered:
        raise NotImplementedError

    async def send_fragments(self, rendered: Rendered) -> None:
        for frame in frames([rendered] if isinstance(rendered, str) else rendered):
            await self.send(text_data=frame)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=SESSION_ENDED)
            return
        self.user_id = user.pk
        session = self.scope.get("session")
        self.session_key: str | None = session.session_key if session is not None else None
        self.groups = [sessions.user_group(user.pk)]
        if self.joins_fleet_group:
            self.groups.append(events.GROUP)
        if self.session_key:
            self.groups.append(sessions.session_group(self.session_key))
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.operator = await database_sync_to_async(can_operate)(user)
        await self.accept()
        self.watcher = asyncio.create_task(self.watch_session())
        events.relay.ensure_started()
        await self.resync()

    async def resync(self) -> None:
        await self.send_fragments(await database_sync_to_async(self.render_resync)())

    async def disconnect(self, code: int) -> None:
        watcher: asyncio.Task[None] | None = getattr(self, "watcher", None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for group in getattr(self, "groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)

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
        """This socket's session logged out (sent by ``core.sessions``)."""
        await self.end_session()

    async def session_check(self, message: dict[str, Any]) -> None:
        """The user's password or active flag changed: is this session still valid?"""
        if not await self.session_is_live():
            await self.end_session()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Live pages only listen: what a browser sends is ignored unless a page says."""

    async def fleet_event(self, message: dict[str, Any]) -> None:
        if getattr(self, "ended", False):
            return
        await self.send_fragments(await database_sync_to_async(self.render_event)(message["event"]))
