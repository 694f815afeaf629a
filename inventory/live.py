"""The overview's data and fragments: the same templates for the full page, the
websocket's resync and the live pushes (``inventory.fanout``).

A node is one ``<section id="node-…">`` in every browser, even where a filter hides it
(then empty), so that a node that starts or stops matching is swapped in place. Inside:
its header with the one-line summary (``node-…-line``) and, when expanded, its GPU rows
(``node-…-gpus``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.db.models import Count
from django.template.loader import render_to_string
from django.urls import reverse

from core.events import Event
from inventory.answers import answers
from inventory.fleet_view import (
    STATE_LABELS,
    STATES,
    NodeFacts,
    NodeLine,
    OpenNodes,
    OverviewFilter,
    fleet_summary,
    node_line,
    short_id,
)
from inventory.models import Alert, Gpu, MaintenanceWindow, Node
from inventory.presenters import GpuRow, gpu_row

_CACHE_SIZE = 512
_cache: OrderedDict[str, str] = OrderedDict()
DEFAULT_FILTER = OverviewFilter()
DEFAULT_OPEN = OpenNodes()


# --- the fleet as plain data ---------------------------------------------------------


@lru_cache(maxsize=1)
def _node_url_pattern() -> str:
    return reverse("inventory:node", args=[_PLACEHOLDER])


_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


def node_facts(node: Node, alerts: int) -> NodeFacts:
    return {
        "id": str(node.pk),
        "url": _node_url_pattern().replace(_PLACEHOLDER, str(node.pk)),
        "short": short_id(str(node.pk)),
        "name": node.name,
        "status": node.status,
        "status_display": node.get_status_display(),
        "address": node.address,
        "cpu_count": node.cpu_count,
        "ram_total": node.ram_total,
        "probe_message": node.probe_message,
        "alerts": alerts,
    }


def alert_counts() -> tuple[dict[str, int], dict[str, int]]:
    """Active alerts per node id and per severity (two aggregate queries)."""
    active = Alert.objects.active()
    per_node = active.filter(node__isnull=False).values_list("node").annotate(n=Count("id"))
    per_severity = active.values_list("severity").annotate(n=Count("id"))
    return {str(k): n for k, n in per_node}, {k: n for k, n in per_severity}


def load_facts() -> tuple[dict[str, NodeFacts], dict[str, int]]:
    """Every node's facts by id, in name order, and active alerts by severity."""
    per_node, per_severity = alert_counts()
    nodes = Node.objects.order_by("name")
    facts = {str(n.pk): node_facts(n, per_node.get(str(n.pk), 0)) for n in nodes}
    return facts, per_severity


def load_rows(node_ids: Iterable[str] | None = None) -> dict[str, list[GpuRow]]:
    """GPU rows by node id (every node, or those given), in index order."""
    gpus = Gpu.objects.with_claims().order_by("node_id", "index")
    if node_ids is not None:
        gpus = gpus.filter(node_id__in=list(node_ids))
    ours = answers.backend_pids()
    rows: dict[str, list[GpuRow]] = {}
    for gpu in gpus:
        rows.setdefault(str(gpu.node_id), []).append(gpu_row(gpu, ours))
    return rows


@dataclass
class Fleet:
    """Facts, GPU rows and one-line summaries of every node, in name order."""

    facts: dict[str, NodeFacts]
    rows: dict[str, list[GpuRow]]
    alerts: dict[str, int]
    lines: dict[str, NodeLine] = field(default_factory=dict)

    @classmethod
    def load(cls) -> Fleet:
        facts, alerts = load_facts()
        return cls(facts=facts, rows=load_rows(), alerts=alerts)

    def line(self, node_id: str) -> NodeLine:
        if node_id not in self.lines:
            self.lines[node_id] = node_line(self.rows.get(node_id, []))
        return self.lines[node_id]

    def set_rows(self, node_id: str, rows: list[GpuRow]) -> None:
        self.rows[node_id] = rows
        self.lines.pop(node_id, None)

    def summary(self) -> dict[str, Any]:
        pairs = ((facts, self.rows.get(node_id, [])) for node_id, facts in self.facts.items())
        return fleet_summary(pairs, self.alerts)

    def entry(self, node_id: str, view: OverviewFilter, open_nodes: OpenNodes) -> dict[str, Any]:
        """What ``_node.html`` renders for one node in one browser's view."""
        facts, line = self.facts[node_id], self.line(node_id)
        visible = view.matches(facts, line)
        is_open = visible and open_nodes.is_open(facts["short"], len(self.facts))
        rows = self.rows.get(node_id, []) if is_open else []
        return {"facts": facts, "line": line, "rows": rows, "visible": visible, "open": is_open}

    def entries(self, view: OverviewFilter, open_nodes: OpenNodes) -> list[dict[str, Any]]:
        return [self.entry(node_id, view, open_nodes) for node_id in self.facts]


# --- contexts and fragments ----------------------------------------------------------


def fleet_list_context(fleet: Fleet, view: OverviewFilter, open_nodes: OpenNodes) -> dict[str, Any]:
    nodes = fleet.entries(view, open_nodes)
    return {
        "nodes": nodes,
        "shown": sum(entry["visible"] for entry in nodes),
        "view": view,
        "states": [(state, STATE_LABELS[state]) for state in STATES],
    }


def overview_context(
    view: OverviewFilter = DEFAULT_FILTER, open_nodes: OpenNodes = DEFAULT_OPEN
) -> dict[str, Any]:
    """Everything the overview page shows, for this filter and these expanded nodes."""
    fleet = Fleet.load()
    return fleet_list_context(fleet, view, open_nodes) | {
        "summary": fleet.summary(),
        "active_alerts": active_alerts(),
        "cold_starts": answers.cold_starts(),
    }


def fleet_context() -> dict[str, Any]:
    """The overview's context with no filter and the default expanded nodes."""
    return overview_context()


def active_alerts() -> list[Alert]:
    return list(Alert.objects.active().select_related("node", "gpu")[:50])


def render_node(entry: dict[str, Any]) -> str:
    return render_to_string("inventory/_node.html", {"entry": entry, "oob": True})


def render_line(facts: NodeFacts, line: NodeLine) -> str:
    context = {"facts": facts, "line": line, "oob": True}
    return render_to_string("inventory/_node_line.html", context)


def render_rows(node_id: str, rows: list[GpuRow]) -> str:
    context = {"node_id": node_id, "rows": rows, "oob": True}
    return render_to_string("inventory/_gpu_rows.html", context)


def render_summary(summary: dict[str, Any]) -> str:
    return render_to_string("inventory/_fleet_summary.html", {"summary": summary, "oob": True})


def render_fleet(fleet: Fleet, view: OverviewFilter, open_nodes: OpenNodes) -> str:
    context = fleet_list_context(fleet, view, open_nodes) | {"oob": True}
    return render_to_string("inventory/_fleet.html", context)


def render_resync(
    view: OverviewFilter = DEFAULT_FILTER, open_nodes: OpenNodes = DEFAULT_OPEN
) -> str:
    """Everything the overview shows, for a (re)connecting browser."""
    context = overview_context(view, open_nodes) | {"oob": True}
    context["maintenance_windows"] = list(MaintenanceWindow.objects.announced())
    return "".join(
        render_to_string(name, context)
        for name in (
            "inventory/_fleet_summary.html",
            "inventory/_fleet.html",
            "inventory/_alerts_panel.html",
            "inventory/_cold_starts.html",
            "partials/maintenance_banner.html",
        )
    )


def render_nodes(node_ids: Iterable[str], view: OverviewFilter, open_nodes: OpenNodes) -> str:
    """The sections of these nodes (a browser expanded or collapsed them)."""
    wanted = set(node_ids)
    facts, alerts = load_facts()
    fleet = Fleet(facts=facts, rows=load_rows(wanted), alerts=alerts)
    return "".join(
        render_node(fleet.entry(node_id, view, open_nodes))
        for node_id in facts
        if node_id in wanted
    )


def toggled_nodes(before: OpenNodes, after: OpenNodes) -> list[str]:
    """Ids of the nodes that one change of the expanded set opens or closes."""
    ids = [str(pk) for pk in Node.objects.order_by("name").values_list("pk", flat=True)]
    size = len(ids)
    return [i for i in ids if before.is_open(short_id(i), size) != after.is_open(short_id(i), size)]


def render_panel(event: Event) -> str:
    """Alerts, maintenance banner and cold starts: the panels one event re-renders."""
    kind = event["kind"]
    if kind == "alerts.changed":
        return render_to_string(
            "inventory/_alerts_panel.html", {"active_alerts": active_alerts(), "oob": True}
        )
    if kind == "maintenance.changed":
        windows = list(MaintenanceWindow.objects.announced().select_related("node"))
        return render_to_string(
            "partials/maintenance_banner.html", {"maintenance_windows": windows, "oob": True}
        )
    if kind == "deployment.changed":
        context = {"cold_starts": answers.cold_starts(), "oob": True}
        return render_to_string("inventory/_cold_starts.html", context)
    return ""


def _render_uncached(event: Event) -> str:
    kind = event["kind"]
    if kind == "node.gpus":
        return render_rows(event["node_id"], event["rows"])  # type: ignore[arg-type]
    if kind in ("alerts.changed", "maintenance.changed", "deployment.changed"):
        return render_panel(event)
    if kind.startswith(("download.", "deployment.", "instance.", "key.", "gateway.")):
        return ""  # not shown on the overview
    # node.status, gpu.settings: the node's section changed shape; send the fleet again.
    return render_fleet(Fleet.load(), DEFAULT_FILTER, DEFAULT_OPEN)


def render_event(event: Event) -> str:
    """One event's fragment for a browser with the default view (the per-socket path;
    the overview's sockets get theirs from ``inventory.fanout``)."""
    key = event["id"]
    html = _cache.get(key)
    if html is None:
        html = _render_uncached(event)
        _cache[key] = html
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return html
