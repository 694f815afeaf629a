"""Render live events into the same fragments the full pages use.

Each event is rendered once per process (cached by its id), however many browsers
are connected; events that carry their data (GPU rows) need no database read."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from django.db.models import Prefetch
from django.template.loader import render_to_string

from inventory.events import Event
from inventory.models import Alert, Gpu, MaintenanceWindow, Node
from inventory.presenters import gpu_rows

_CACHE_SIZE = 512
_cache: OrderedDict[str, str] = OrderedDict()


def fleet_context() -> dict[str, Any]:
    gpus = Prefetch("gpus", queryset=Gpu.objects.with_claims().order_by("index"))
    nodes = Node.objects.prefetch_related(gpus).order_by("name")
    return {
        "nodes": [{"node": node, "rows": gpu_rows(node.gpus.all())} for node in nodes],
        "active_alerts": list(Alert.objects.active().select_related("node", "gpu")[:50]),
        "cold_starts": cold_starts(),
    }


def cold_starts() -> list[dict[str, Any]]:
    """Deployments whose requests wait for a cold start, with about how long it takes."""
    from scheduling.models import Deployment
    from scheduling.views.fragments import recent_starts, start_estimate

    waiting = Deployment.objects.filter(waiting__gt=0).order_by("served_name")
    return [{"deployment": d, "estimate": start_estimate(recent_starts(d))} for d in waiting]


def render_resync() -> str:
    """Everything the overview shows, for a (re)connecting browser."""
    context = fleet_context() | {"oob": True}
    context["maintenance_windows"] = list(MaintenanceWindow.objects.announced())
    return "".join(
        render_to_string(name, context)
        for name in (
            "inventory/_fleet.html",
            "inventory/_alerts_panel.html",
            "inventory/_cold_starts.html",
            "partials/maintenance_banner.html",
        )
    )


def _render_uncached(event: Event) -> str:
    kind = event["kind"]
    if kind == "node.gpus":
        context = {"node_id": event["node_id"], "rows": event["rows"], "oob": True}
        return render_to_string("inventory/_gpu_rows.html", context)
    if kind == "alerts.changed":
        alerts = list(Alert.objects.active().select_related("node", "gpu")[:50])
        return render_to_string(
            "inventory/_alerts_panel.html", {"active_alerts": alerts, "oob": True}
        )
    if kind == "maintenance.changed":
        windows = list(MaintenanceWindow.objects.announced().select_related("node"))
        return render_to_string(
            "partials/maintenance_banner.html", {"maintenance_windows": windows, "oob": True}
        )
    if kind == "deployment.changed":
        context = {"cold_starts": cold_starts(), "oob": True}
        return render_to_string("inventory/_cold_starts.html", context)
    if kind.startswith(("download.", "deployment.", "instance.", "key.", "gateway.")):
        return ""  # not shown on the overview
    # node.status, gpu.settings: the node's section changed shape; send the fleet again.
    return render_to_string("inventory/_fleet.html", fleet_context() | {"oob": True})


def render_event(event: Event) -> str:
    key = event["id"]
    html = _cache.get(key)
    if html is None:
        html = _render_uncached(event)
        _cache[key] = html
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return html
