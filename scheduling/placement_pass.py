"""Placement passes: pending instances → GPU claims, safe under concurrency.

A pass takes the placement lock (PostgreSQL: a transaction-level advisory lock;
SQLite: every transaction already begins IMMEDIATE, one writer at a time), reads the
fleet once, places each pending instance with the pure ``placement.place`` and writes
its claims, updating the fleet in memory so that later instances of the same pass see
them. Side effects (start tasks, downloads) run after commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from scheduling import events, evicting, preparing
from scheduling.choices import InstanceState
from scheduling.fleet import Fleet, request_for, run_settings, sizer_for
from scheduling.models import Deployment, GpuClaim, Instance
from scheduling.placement import Memo, Placement, Refusal, place
from scheduling.placement_sizer import EstimatorSizer

logger = logging.getLogger("gpufleet.scheduling")
_LOCK_KEY = 0x6770_7566  # "gpuf"
MAX_REASONS_SHOWN = 12
WAITING_PREFIX = "Waiting: "  # a pending instance that waits for room being made (eviction)


def placement_lock() -> None:
    """Serialise placement passes across processes and machines (inside a transaction)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])


@dataclass
class PassResult:
    placed: list[Instance]
    refused: list[Instance]


def pending_instances(limit: int | None = None) -> list[Instance]:
    now = timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    rows = (
        Instance.objects.filter(state=InstanceState.PENDING, deployment__desired_state="running")
        .filter(due)
        .select_related("deployment", "deployment__model")
        .defer("deployment__model__facts")
        .prefetch_related("deployment__only_gpus", "deployment__exclude_gpus")
        .order_by("-deployment__priority", "created_at")
    )
    return list(rows[:limit] if limit else rows)


@dataclass
class _Writes:
    """What a pass writes, in a few statements at its end instead of per instance."""

    claims: list[GpuClaim]
    placed: list[Instance]
    refused: list[Instance]

    def flush(self) -> None:
        now = timezone.now()
        for instance in (*self.placed, *self.refused):
            instance.updated_at = now
        GpuClaim.objects.bulk_create(self.claims, batch_size=500)
        Instance.objects.bulk_update(self.placed, PLACED_FIELDS, batch_size=500)
        Instance.objects.bulk_update(self.refused, ["reason", "updated_at"], batch_size=500)
        events.instances_changed([*self.placed, *self.refused])


PLACED_FIELDS = [
    "state", "node_id", "placement_kind", "n_gpu_layers", "tensor_split", "host_bytes",
    "estimated", "measured", "reason", "next_attempt_at", "updated_at", "placed_at", "files_at",
]  # fmt: skip


def do_place_pending(limit: int | None = None) -> PassResult:
    """Place every pending instance that can be placed now; the others keep a reason."""
    result = PassResult([], [])
    with transaction.atomic():
        placement_lock()
        instances = pending_instances(limit)
        if not instances:
            return result
        fleet = Fleet.load()
        sizers: dict[str, EstimatorSizer] = {}
        memos: dict[tuple[object, str], Memo] = {}
        writes = _Writes([], [], [])
        for instance in instances:
            outcome = _place_one(fleet, instance, sizers, memos, writes)
            (result.placed if isinstance(outcome, Placement) else result.refused).append(instance)
        writes.flush()
    for instance in result.placed:
        transaction.on_commit(partial(_after_placed, instance))
    return result


def _place_one(
    fleet: Fleet,
    instance: Instance,
    sizers: dict[str, EstimatorSizer],
    memos: dict[tuple[object, str], Memo],
    writes: _Writes,
) -> Placement | Refusal:
    deployment = instance.deployment
    key = sizer_key(deployment)
    if key not in sizers:
        sizers[key] = sizer_for(deployment)
    request = request_for(deployment)
    memo = memos.setdefault((deployment.model_id, repr(request)), Memo())
    try:
        outcome = place(fleet.for_deployment(deployment), request, sizers[key], memo)
    except Exception as exc:  # an estimator failure must not stop the whole pass
        logger.exception("placing %s failed", instance)
        outcome = Refusal((f"Cannot estimate this model's memory: {exc}",))
    if isinstance(outcome, Refusal):
        nodes = fleet.for_deployment(deployment)
        waiting = evicting.try_eviction(instance, nodes, request, sizers[key])
        if _refusal_reason(instance, outcome, waiting, sizers[key].learned_note):
            writes.refused.append(instance)
        return outcome
    writes.claims.extend(stage_placement(instance, outcome))
    writes.placed.append(instance)
    fleet.claim(outcome)
    return outcome


def sizer_key(deployment: Deployment) -> str:
    """Deployments of one model with the same memory settings share one sizer."""
    return f"{deployment.model_id}:{run_settings(deployment)!r}:{deployment.cache_ram}"


def _refusal_reason(
    instance: Instance, refusal: Refusal, waiting: str | None = None, learned: str = ""
) -> bool:
    """Set the instance's reason from a refusal (or from what it waits for: an
    eviction under way), saying which figures were learned rather than computed
    (``learned``: the sizer's note); True when it changed."""
    lines = list(refusal.reasons[:MAX_REASONS_SHOWN])
    if len(refusal.reasons) > MAX_REASONS_SHOWN:
        lines.append(f"… and {len(refusal.reasons) - MAX_REASONS_SHOWN} more")
    reason = "No room for it: " + "; ".join(lines) if lines else "No node can take it."
    if waiting:
        reason = f"{WAITING_PREFIX}{waiting}"
    if learned:
        reason = f"{reason} ({learned})"
    changed = reason != instance.reason
    instance.reason = reason
    return changed


def stage_placement(instance: Instance, placement: Placement) -> list[GpuClaim]:
    """The instance moved to scheduled (fields set, not saved) and its claims (not saved)."""
    pairs = list(zip(placement.gpu_ids, placement.gpu_bytes, strict=True))
    estimated = {f"CUDA{position}": size for position, (_, size) in enumerate(pairs)}
    estimated["CPU"] = placement.host_bytes
    instance.state = InstanceState.SCHEDULED
    instance.node_id = placement.node_id
    instance.placement_kind = placement.kind.value
    instance.n_gpu_layers = placement.n_gpu_layers
    instance.tensor_split = list(placement.tensor_split) if placement.tensor_split else None
    instance.host_bytes = placement.host_bytes
    instance.estimated, instance.measured = estimated, {}
    instance.reason, instance.next_attempt_at = "", None
    instance.placed_at, instance.files_at = timezone.now(), None
    return [
        GpuClaim(instance=instance, gpu_id=gpu_id, position=position, estimated=size, claimed=size)
        for position, (gpu_id, size) in enumerate(pairs)
    ]


def _after_placed(instance: Instance) -> None:
    preparing.do_prepare_start(instance.pk)


def preview(
    deployment: Deployment,
    only_gpus: Iterable[Any] | None = None,
    exclude_gpus: Iterable[Any] | None = None,
) -> Placement | Refusal:
    """Where one more replica would go now, without claiming anything."""
    fleet = Fleet.load()
    request = request_for(deployment, only_gpus, exclude_gpus)
    return place(fleet.for_deployment(deployment), request, sizer_for(deployment))


def run_pass_after_commit(reason: str = "") -> None:
    transaction.on_commit(lambda: _safe_pass(reason))


def _safe_pass(reason: str) -> None:
    try:
        do_place_pending()
    except Exception:
        logger.exception("placement pass (%s) failed", reason or "requested")
