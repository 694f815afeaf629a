"""The websocket routes that no app owns: an unknown path is refused cleanly."""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import re_path

NOT_FOUND = 4404


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Refuses the handshake (HTTP 403 to the browser) instead of the router's traceback."""

    async def connect(self) -> None:
        await self.close(code=NOT_FOUND)


# Last in the router: whatever the apps' routes did not match.
websocket_fallback = [re_path(r"", NotFoundConsumer.as_asgi())]
