"""The node page's websocket (``/ws/nodes/<id>/``): its header, GPU rows and drain panel
re-rendered from the same fragments as the page, after the events that change them
(``node.status``: drained, undrained, offline, maintenance; ``instance.changed`` and
``deployment.changed``: an instance moved off it, or its replacement progressed)."""

from __future__ import annotations

from django.template.loader import render_to_string

from core.consumers import LiveConsumer, Rendered
from core.events import Event
from inventory.choices import MOVING_AWAY
from inventory.models import Node
from inventory.presenters import gpu_rows
from inventory.views.nodes import drain_context

_DRAIN_KINDS = ("instance.changed", "deployment.changed")


class NodeConsumer(LiveConsumer):
    @property
    def node_id(self) -> str:
        return str(self.scope["url_route"]["kwargs"]["node_id"])

    def _node(self) -> Node | None:
        return Node.objects.filter(pk=self.node_id).first()

    def render_resync(self) -> Rendered:
        node = self._node()
        if node is None:
            return ""
        return [self._header(node), self._gpus(node), self._drain(node)]

    def render_event(self, event: Event) -> Rendered:
        kind = event["kind"]
        for_us = str(event.get("node_id", "")) == self.node_id
        if kind == "node.gpus" and for_us:
            context = {"node_id": self.node_id, "rows": event["rows"], "oob": True}
            return render_to_string("inventory/_gpu_rows.html", context)
        if kind == "node.status" and for_us:
            return self.render_resync()
        if kind in _DRAIN_KINDS:
            node = self._node()
            if node is not None and node.status in MOVING_AWAY:
                return self._drain(node)
        return ""

    def _header(self, node: Node) -> str:
        return render_to_string("inventory/_node_header.html", {"node": node, "oob": True})

    def _gpus(self, node: Node) -> str:
        context = {"node_id": node.pk, "rows": gpu_rows(node.gpus.with_claims()), "oob": True}
        return render_to_string("inventory/_gpu_rows.html", context)

    def _drain(self, node: Node) -> str:
        context = drain_context(node) | {"can_operate": self.operator, "oob": True}
        return render_to_string("inventory/_node_drain.html", context)
