"""The fleet websocket: a full resync on connect, then one fragment per event."""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model

from inventory import events, live
from inventory.access import can_operate

RECHECK_EVERY = 30.0


def _still_allowed(user_id: int) -> bool:
    return get_user_model().objects.filter(pk=user_id, is_active=True).exists()


class FleetConsumer(AsyncWebsocketConsumer):
    """The overview's socket; pages with other live parts subclass it and override the two
    ``render_*`` methods (run in a thread: they may read the database)."""

    operator = False

    def render_resync(self) -> str:
        return live.render_resync()

    def render_event(self, event: events.Event) -> str:
        return live.render_event(event)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        self.user_id = user.pk
        self.checked_at = time.monotonic()
        await self.channel_layer.group_add(events.GROUP, self.channel_name)
        self.operator = await database_sync_to_async(can_operate)(user)
        await self.accept()
        events.relay.ensure_started()
        await self.send(text_data=await database_sync_to_async(self.render_resync)())

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(events.GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Browsers only listen; anything they send is ignored."""

    async def fleet_event(self, message: dict[str, Any]) -> None:
        if time.monotonic() - self.checked_at > RECHECK_EVERY:
            self.checked_at = time.monotonic()
            if not await database_sync_to_async(_still_allowed)(self.user_id):
                await self.close(code=4403)
                return
        html = await database_sync_to_async(self.render_event)(message["event"])
        if html:
            await self.send(text_data=html)
