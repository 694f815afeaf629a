"""The deployment pages' websocket: ``/ws/deployments/`` for the list,
``/ws/deployments/<id>/`` for one deployment. A full resync on connect, then the
fragments each event changes (rendered in ``scheduling.live``)."""

from __future__ import annotations

from core.consumers import LiveConsumer
from core.events import Event
from scheduling import live


class DeploymentsConsumer(LiveConsumer):
    @property
    def deployment_id(self) -> str | None:
        kwargs = self.scope.get("url_route", {}).get("kwargs", {})
        value = kwargs.get("deployment_id")
        return str(value) if value else None

    def render_resync(self) -> str:
        return live.render_resync(self.operator, self.deployment_id)

    def render_event(self, event: Event) -> str:
        return live.render_event(event, self.operator, self.deployment_id)
