"""What the overview shows of a large fleet, over plain data (no database).

* ``OverviewFilter``: the query string's ``q`` (node name, address or GPU model) and
  ``state`` (a node status, ``alerting`` or ``faulty``: a GPU missing or in error);
* ``OpenNodes``: which nodes a browser shows expanded, remembered in the ``gf_nodes``
  cookie (``auto``, ``open`` or ``closed``, and the nodes toggled against it);
* ``node_line``: a node's one-line summary from its GPU rows;
* ``fleet_summary``: the figures at the top of the page (GPUs by state, memory,
  alerts, nodes by status).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import unquote, urlencode

from inventory.choices import NodeStatus
from inventory.presenters import GpuRow, gpu_state

# Up to this many nodes the overview shows every node expanded unless told otherwise.
AUTO_OPEN_UP_TO = 8
COOKIE = "gf_nodes"
OPEN_MODES = ("auto", "open", "closed")
MAX_FLIPPED = 120
SHORT_ID = 12  # hex digits of a node's id in the cookie
STATES = ("online", "offline", "draining", "maintenance", "alerting", "faulty")
STATE_LABELS = {
    "online": "Online",
    "offline": "Offline",
    "draining": "Draining",
    "maintenance": "Maintenance",
    "alerting": "With alerts",
    "faulty": "GPU missing or in error",
}


class NodeFacts(TypedDict):
    """A node as the overview shows it, apart from its GPU rows."""

    id: str
    url: str
    short: str
    name: str
    status: str
    status_display: str
    address: str
    cpu_count: int
    ram_total: int
    probe_message: str
    alerts: int


class NodeLine(TypedDict):
    """A node's GPUs in one line: what a collapsed node shows."""

    gpus: int
    models: str
    util: int
    mem_used: int
    mem_total: int
    mem_pct: int
    claimed: int
    temp_max: float | None
    power: int
    problems: int
    disabled: int
    sampled: float | None
    cells: list[tuple[str, int]]


def short_id(node_id: str) -> str:
    return node_id.replace("-", "")[:SHORT_ID]


@dataclass(frozen=True)
class OverviewFilter:
    q: str = ""
    state: str = ""

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> OverviewFilter:
        q = " ".join(str(params.get("q") or "").split())[:100]
        state = str(params.get("state") or "")
        return cls(q=q, state=state if state in STATES else "")

    @property
    def active(self) -> bool:
        return bool(self.q or self.state)

    def query(self) -> str:
        return urlencode({k: v for k, v in (("q", self.q), ("state", self.state)) if v})

    def matches(self, facts: NodeFacts, line: NodeLine) -> bool:
        return self._state_matches(facts, line) and self._text_matches(facts, line)

    def _state_matches(self, facts: NodeFacts, line: NodeLine) -> bool:
        if not self.state:
            return True
        if self.state == "alerting":
            return facts["alerts"] > 0
        if self.state == "faulty":
            return line["problems"] > 0
        return facts["status"] == self.state

    def _text_matches(self, facts: NodeFacts, line: NodeLine) -> bool:
        if not self.q:
            return True
        haystack = f"{facts['name']} {facts['address']} {line['models']}".lower()
        return all(word in haystack for word in self.q.lower().split())


@dataclass(frozen=True)
class OpenNodes:
    """Expanded nodes: the mode's default, except the nodes in ``flipped``."""

    mode: str = "auto"
    flipped: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, value: str | None) -> OpenNodes:
        mode, _, rest = unquote(value or "").partition(":")
        if mode not in OPEN_MODES:
            return cls()
        ids = [part for part in rest.split(".") if _is_short_id(part)]
        return cls(mode=mode, flipped=frozenset(ids[:MAX_FLIPPED]))

    def is_open(self, short: str, fleet_size: int) -> bool:
        default = self.mode == "open" or (self.mode == "auto" and fleet_size <= AUTO_OPEN_UP_TO)
        return default != (short in self.flipped)


def _is_short_id(value: str) -> bool:
    return len(value) == SHORT_ID and all(c in "0123456789abcdef" for c in value)


def _models(rows: Iterable[GpuRow]) -> str:
    counts = Counter(row["name"] for row in rows)
    return ", ".join(f"{n}× {name}" for name, n in counts.most_common())


def node_line(rows: list[GpuRow]) -> NodeLine:
    present = [row for row in rows if row["present"]]
    states = [gpu_state(row) for row in rows]
    used = sum(row["memory_used"] for row in present)
    total = sum(row["memory_total"] for row in present)
    temps = [row["temperature"] for row in present if row["temperature"] is not None]
    sampled = [row["sampled_at"] for row in rows if row["sampled_at"] is not None]
    util = sum(row["utilization"] for row in present) / len(present) if present else 0.0
    return {
        "gpus": len(rows),
        "models": _models(rows),
        "util": round(util),
        "mem_used": used,
        "mem_total": total,
        "mem_pct": round(100 * used / total) if total else 0,
        "claimed": sum(row["claimed"] for row in rows),
        "temp_max": max(temps) if temps else None,
        "power": round(sum(row["power_draw"] or 0 for row in present)),
        "problems": sum(state in ("missing", "error") for state in states),
        "disabled": states.count("disabled"),
        "sampled": max(sampled) if sampled else None,
        "cells": [
            (state, round(row["utilization"])) for state, row in zip(states, rows, strict=True)
        ],
    }


def fleet_summary(
    nodes: Iterable[tuple[NodeFacts, list[GpuRow]]], alerts: Mapping[str, int]
) -> dict[str, Any]:
    """Nodes by status, GPUs by state, memory totals and active alerts by severity."""
    statuses: Counter[str] = Counter()
    gpu_states: Counter[str] = Counter()
    used = claimed = total = free = 0
    for facts, rows in nodes:
        statuses[facts["status"]] += 1
        for row in rows:
            gpu_states[gpu_state(row)] += 1
            claimed += row["claimed"]
            if row["present"]:
                used += row["memory_used"]
                total += row["memory_total"]
                free += max(row["memory_total"] - row["memory_used"], 0)
    return {
        "nodes": sum(statuses.values()),
        "node_states": [(s.value, s.label, statuses[s.value]) for s in NodeStatus],
        "gpus": sum(gpu_states.values()),
        "gpu_states": [(s, gpu_states[s]) for s in ("enabled", "disabled", "error", "missing")],
        "mem_used": used,
        "mem_claimed": claimed,
        "mem_free": free,
        "mem_total": total,
        "mem_used_pct": round(100 * used / total, 1) if total else 0.0,
        "mem_claimed_pct": round(100 * claimed / total, 1) if total else 0.0,
        "alerts": sum(alerts.values()),
        "alerts_critical": alerts.get("critical", 0),
        "alerts_warning": alerts.get("warning", 0),
    }
