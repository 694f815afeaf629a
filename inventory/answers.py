"""What inventory asks about the work running on the fleet, answered by scheduling.

Scheduling owns deployments and instances and sits above inventory: it registers its
answers when Django starts (``SchedulingConfig.ready``), so inventory's pages, API and
admin never import it. Each question has a neutral answer until then (inventory alone:
no process is ours, nothing to move, a node is simply deleted)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inventory.models import Node


def _no_pids(**claim_filter: object) -> set[int]:
    return set()


def _nothing_to_move(node: Node) -> list[dict[str, Any]]:
    return []


def _no_cold_starts() -> list[dict[str, Any]]:
    return []


def _delete(node: Node, *, only_offline: bool = False) -> object:
    from django.db import transaction

    from inventory.actions import lock_node_for_removal

    with transaction.atomic():
        locked = lock_node_for_removal(node, only_offline=only_offline)
        return locked.delete() if locked is not None else None


@dataclass
class Answers:
    # Server pids of our backends with claims matching ``claims__<filter>`` (``gpu=``,
    # ``gpu__node=``): the processes on a GPU that are gpufleet's own.
    backend_pids: Callable[..., set[int]] = _no_pids
    # While a node drains or is in maintenance: its instances still there, plain data.
    drain_report: Callable[[Node], list[dict[str, Any]]] = _nothing_to_move
    # Deployments whose requests wait for a cold start: ``deployment``, ``estimate`` (s).
    cold_starts: Callable[[], list[dict[str, Any]]] = _no_cold_starts
    # A node removed for good (the admin's delete, the API's DELETE): what ran there
    # moves elsewhere. ``only_offline=True``: inventory.actions.NodeNotOffline unless the
    # node is offline while its row is locked for the removal.
    remove_node: Callable[..., object] = _delete


answers = Answers()


def answer_with(**functions: Callable[..., Any]) -> None:
    """Register answers by question name (``answer_with(drain_report=...)``)."""
    known = {field.name for field in fields(Answers)}
    for name, function in functions.items():
        if name not in known:
            raise TypeError(f"inventory asks no question named {name!r}")
        setattr(answers, name, function)
