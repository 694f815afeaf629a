"""The node page (facts, GPUs, maintenance, alerts, what a drain still has to move) and
the operators' drain / undrain button."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.access import can_operate, require_operator
from inventory.actions import do_set_draining
from inventory.answers import answers
from inventory.choices import MOVING_AWAY
from inventory.models import Node
from inventory.presenters import gpu_rows


def drain_context(node: Node) -> dict[str, Any]:
    """The drain panel's data (also rendered live, ``inventory.node_live``)."""
    moving = node.status in MOVING_AWAY
    return {
        "node": node,
        "moving_away": moving,
        "drain": answers.drain_report(node) if moving else [],
    }


@require_GET
def node_detail(request: HttpRequest, node_id: str) -> HttpResponse:
    node = get_object_or_404(Node, pk=node_id)
    context = {
        "rows": gpu_rows(node.gpus.with_claims()),
        "windows": node.maintenance_windows.filter(ends_at__gt=node.created_at).order_by(
            "-starts_at"
        )[:20],
        "alerts": node.alert_set.all()[:20],
        "can_operate": can_operate(request.user),
        **drain_context(node),
    }
    return render(request, "inventory/node_detail.html", context)


@require_POST
def node_drain(request: HttpRequest, node_id: str) -> HttpResponse:
    """``drain=1``: stop new placements and move its instances (make before break);
    ``drain=0``: take placements again."""
    require_operator(request.user, "drain nodes")
    node = get_object_or_404(Node, pk=node_id)
    do_set_draining(node, request.POST.get("drain", "1") != "0")
    if getattr(request, "htmx", False):
        context = drain_context(node) | {"can_operate": True}
        return render(request, "inventory/_node_drain.html", context)
    return redirect("inventory:node", node_id=node.pk)
