"""Live fragments of the deployment pages, after ``deployment.changed`` /
``instance.changed`` (and ``node.gpus`` for the memory bars of a deployment's GPUs), and
``instance.readings`` (the agent's readings of a backend, every few seconds while they
change: only the readings cell of the instance's row, or the deployment's list row).

Two scopes: the list (``deployment_id`` None) and one deployment's page. Each event is
rendered once per scope and kind of viewer (operators see the buttons), however many
browsers are connected. Fragments go bare, with a stable id and ``hx-swap-oob`` (see
``models_app.live``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from django.template.loader import render_to_string

from core.events import Event
from scheduling.views import fragments

_CACHE_SIZE = 512
_cache: OrderedDict[tuple[str, bool, str], str] = OrderedDict()


def _render(name: str, context: dict[str, Any]) -> str:
    return render_to_string(f"scheduling/{name}", context | {"oob": True})


# --- the list ---------------------------------------------------------------------------


def render_list(operator: bool) -> str:
    context = {"rows": fragments.list_rows(), "can_operate": operator}
    return _render("_deployment_table.html", context)


def _list_event(event: Event, operator: bool) -> str:
    kind = event["kind"]
    if kind == "deployment.changed":  # created, deleted or changed: the table again
        return render_list(operator)
    if kind in ("instance.changed", "instance.readings"):
        row = fragments.one_row(event.get("deployment_id"))
        return _render("_deployment_row.html", {"row": row}) if row else ""
    return ""


# --- one deployment ---------------------------------------------------------------------


def render_memory(deployment_id: str) -> str:
    return _render("_memory.html", fragments.memory_context(deployment_id))


def render_detail(deployment_id: str, operator: bool) -> str:
    """The summary, the memory bars and the instances of a deployment (or that it went)."""
    deployment = fragments.get_deployment(deployment_id)
    if deployment is None:
        return _render("_deployment_gone.html", {"deployment_id": deployment_id})
    context = fragments.detail_context(deployment, operator)
    return "".join(
        _render(name, context)
        for name in ("_deployment_summary.html", "_memory.html", "_instance_table.html")
    )


def _instance_update(event: Event, operator: bool, deployment_id: str) -> str:
    item = fragments.one_instance(event.get("instance_id"))
    deployment = fragments.get_deployment(deployment_id)
    if item is None or deployment is None:
        return render_detail(deployment_id, operator)
    counts = _render("_deployment_counts.html", {"row": fragments.deployment_row(deployment)})
    return _render("_instance.html", {"item": item}) + counts + render_memory(deployment_id)


def _readings_update(event: Event) -> str:
    item = fragments.instance_readings(event.get("instance_id"))
    return _render("_instance_readings.html", {"item": item}) if item else ""


def _detail_event(event: Event, operator: bool, deployment_id: str) -> str:
    kind = event["kind"]
    ours = event.get("deployment_id") == deployment_id
    if kind == "instance.readings":
        return _readings_update(event) if ours else ""
    if kind == "deployment.changed":
        return render_detail(deployment_id, operator) if ours else ""
    if kind == "instance.changed" and ours:
        return _instance_update(event, operator, deployment_id)
    shares_a_node = event.get("node_id") in fragments.deployment_node_ids(deployment_id)
    if kind in ("instance.changed", "node.gpus") and shares_a_node:
        return render_memory(deployment_id)  # another deployment's claim or foreign use
    return ""


# --- entry points -----------------------------------------------------------------------


def render_resync(operator: bool, deployment_id: str | None) -> str:
    if deployment_id is None:
        return render_list(operator)
    return render_detail(deployment_id, operator)


def _render_uncached(event: Event, operator: bool, deployment_id: str | None) -> str:
    if deployment_id is None:
        return _list_event(event, operator)
    return _detail_event(event, operator, deployment_id)


def render_event(event: Event, operator: bool, deployment_id: str | None = None) -> str:
    if not event["kind"].startswith(("deployment.", "instance.", "node.gpus")):
        return ""
    key = (event["id"], operator, deployment_id or "")
    html = _cache.get(key)
    if html is None:
        html = _render_uncached(event, operator, deployment_id)
        _cache[key] = html
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return html
