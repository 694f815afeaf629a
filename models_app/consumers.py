"""The downloads page's websocket: the table on connect, then a row per download event."""

from __future__ import annotations

from core.consumers import LiveConsumer
from core.events import Event
from models_app import live


class DownloadsConsumer(LiveConsumer):
    def render_resync(self) -> str:
        return live.render_resync(self.operator)

    def render_event(self, event: Event) -> str:
        return live.render_event(event, self.operator)
