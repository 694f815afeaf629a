"""State changes of instances (see ``Instance``'s docstring for the machine). Each is one
conditional UPDATE from the states it may leave, so a worker, an agent and an operator
racing each other cannot both win, and emits one ``instance.changed`` event."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from inventory.models import Gpu, Node
from scheduling import events, measuring
from scheduling.choices import PROCESS_STATES, InstanceState
from scheduling.models import GpuClaim, Instance, InstanceRun, log_file_name

logger = logging.getLogger("gpufleet.scheduling")
S = InstanceState
START_TASK = "scheduling.tasks.start_instance"
STOP_TASK = "scheduling.tasks.stop_instance"


def move(instance: Instance, source: Sequence[str], target: str, **fields: Any) -> bool:
    """``instance`` from one of ``source`` to ``target``; False when it was elsewhere."""
    moved = Instance.objects.filter(pk=instance.pk, state__in=source).update(
        state=target, updated_at=timezone.now(), **fields
    )
    if moved:
        instance.refresh_from_db()
        events.instance_changed(instance)
    return bool(moved)


def release_claims(instance: Instance, running: bool = False) -> None:
    """Delete its claims. ``running``: its process held that memory and has just ended,
    so the GPUs' last readings still count it as used (``Gpu.released``)."""
    claims = GpuClaim.objects.filter(instance=instance)
    if running:
        now = timezone.now()
        for gpu_id, size in claims.values_list("gpu_id", "claimed"):
            Gpu.objects.filter(pk=gpu_id).update(released=F("released") + size, released_at=now)
    claims.delete()


def enqueue(instance: Instance, task: str) -> None:
    """Send a task to the instance's node's worker once the transaction commits."""
    from django_q.tasks import async_task

    assert instance.node is not None
    node_name = instance.node.name

    def send() -> None:
        try:
            task_id = async_task(task, str(instance.pk), cluster=node_name, group="backends")
        except Exception:  # the broker (Redis) restarting: resend_lost_starts sends it again
            logger.warning("could not queue %s for %s; it is sent again", task, instance.pk)
            Instance.objects.filter(pk=instance.pk).update(task_id="")
            raise
        Instance.objects.filter(pk=instance.pk).update(task_id=str(task_id))

    transaction.on_commit(send, robust=True)


# A scheduled instance whose start task could not be queued is sent again after
# RESEND_UNSENT_AFTER s; one still not taken by a worker after RESEND_LOST_AFTER s (its
# task was lost with the broker's queue: Redis restarted without persistence) too.
# Sending twice is harmless: only one worker can take the instance (do_claim_start).
RESEND_UNSENT_AFTER = 5.0
RESEND_LOST_AFTER = 120.0


def do_resend_lost_starts(node: Node) -> int:
    """Queue the start task again for ``node``'s scheduled instances that no worker took."""
    now = timezone.now()
    lost = Instance.objects.filter(node=node, state=S.SCHEDULED).filter(
        Q(task_id="", updated_at__lt=now - timedelta(seconds=RESEND_UNSENT_AFTER))
        | Q(updated_at__lt=now - timedelta(seconds=RESEND_LOST_AFTER))
    )
    count = 0
    for instance in lost.select_related("node"):
        if Instance.objects.filter(pk=instance.pk, state=S.SCHEDULED).update(updated_at=now):
            with transaction.atomic():
                enqueue(instance, START_TASK)
            count += 1
    if count:
        logger.info("sent %d start task(s) again on %s", count, node.name)
    return count


def backoff(restarts: int) -> timedelta:
    """Exponential: base × 2^(restarts − 1), capped."""
    base = settings.GPUFLEET_RESTART_BACKOFF
    seconds = min(base * 2 ** max(restarts - 1, 0), settings.GPUFLEET_RESTART_BACKOFF_MAX)
    return timedelta(seconds=seconds)


# --- starting -------------------------------------------------------------------------


def do_claim_start(instance_id: str, worker: str) -> tuple[Instance, InstanceRun] | None:
    """The node's worker takes a scheduled instance to start it (a new run)."""
    with transaction.atomic():
        claimed = Instance.objects.filter(pk=instance_id, state=S.SCHEDULED).update(
            state=S.STARTING, task_id=worker, started_at=timezone.now(), ready_at=None
        )
        if not claimed:
            return None
        instance = Instance.objects.select_related("deployment", "node", "model_file").get(
            pk=instance_id
        )
        number = instance.runs.count() + 1
        name = log_file_name(instance.deployment.served_name, str(instance.pk), number)
        run = InstanceRun.objects.create(
            instance=instance,
            number=number,
            node=instance.node,
            log_path=str(settings.GPUFLEET_LOG_DIR / name),
        )
        events.instance_changed(instance)
    return instance, run


class PortUnavailable(Exception):
    """No port of the range could be reserved for a starting instance."""


def do_reserve_port(
    instance: Instance, ports: Iterable[int], bindable: Callable[[int], bool]
) -> int:
    """Reserve a port on the instance's node before its backend is launched.

    The unique constraint on (node, port) is the arbiter: two workers that pick the
    same port at the same moment cannot both write it, and the loser tries the next one.
    ``bindable`` skips ports that a process which is not ours holds right now.
    Raises ``PortUnavailable`` when none is left, or when the instance left ``starting``.
    """
    taken = set(
        Instance.objects.filter(node=instance.node, port__isnull=False)
        .exclude(pk=instance.pk)
        .values_list("port", flat=True)
    )
    for port in ports:
        if port in taken or not bindable(port):
            continue
        try:
            with transaction.atomic():
                updated = Instance.objects.filter(pk=instance.pk, state=S.STARTING).update(
                    port=port, updated_at=timezone.now()
                )
        except IntegrityError:
            continue  # another worker reserved it between our read and our write
        if not updated:
            raise PortUnavailable("the instance was stopped while it started")
        instance.port = port
        return port
    raise PortUnavailable("no free port in the backend port range on this node")


def do_record_launch(instance: Instance, pid: int, server_pid: int, server: str = "") -> bool:
    """The pids of a launch, and which server it runs (``backend.LaunchSpec.server``)."""
    now = timezone.now()
    updated = Instance.objects.filter(pk=instance.pk, state=S.STARTING).update(
        pid=pid, server_pid=server_pid, updated_at=now, backend=server, readings={}
    )
    if updated:
        InstanceRun.objects.filter(instance=instance, ended_at__isnull=True).update(
            launched_at=now, server_pid=server_pid
        )
        instance.pid, instance.server_pid, instance.backend = pid, server_pid, server
        events.instance_changed(instance)
    return bool(updated)


def do_mark_running(instance: Instance, measured: Mapping[str, int]) -> bool:
    """Ready: its measured memory replaces the estimate in its claims; after commit the
    buffers its log names are stored for later estimates (``scheduling.measuring``)."""
    now = timezone.now()
    with transaction.atomic():
        if not move(instance, (S.STARTING, S.UNREACHABLE), S.RUNNING, ready_at=now, reason=""):
            return False
        run = InstanceRun.objects.filter(instance=instance, ended_at__isnull=True).first()
        phases = start_phases(instance, run, now) if run and run.ready_at is None else None
        InstanceRun.objects.filter(instance=instance, ended_at__isnull=True).update(
            ready_at=now, measured=dict(measured), **({"phases": phases} if phases else {})
        )
        apply_measurement(instance, measured)
        transaction.on_commit(partial(measuring.record_start, instance.pk))
    return True


def start_phases(instance: Instance, run: InstanceRun, ready: datetime) -> dict[str, float]:
    """Seconds of each phase of a start that ended ready now: placement (pending → placed),
    download (placed → file on the node, when one was needed), queue (→ a worker took
    it), spawn (→ the backend's pids), load (→ it answered)."""
    marks = [
        ("placement", instance.pending_since, instance.placed_at),
        ("download", instance.placed_at, instance.files_at),
        ("queue", instance.files_at or instance.placed_at, run.started_at),
        ("spawn", run.started_at, run.launched_at),
        ("load", run.launched_at, ready),
    ]
    return {
        name: round((end - begin).total_seconds(), 3)
        for name, begin, end in marks
        if begin is not None and end is not None and end >= begin
    }


def apply_measurement(instance: Instance, measured: Mapping[str, int]) -> None:
    """Store per-device measurements; a GPU measured replaces its claim."""
    Instance.objects.filter(pk=instance.pk).update(measured=dict(measured))
    instance.measured = dict(measured)
    for claim in GpuClaim.objects.filter(instance=instance):
        size = measured.get(f"CUDA{claim.position}")
        if size is not None and size > 0:
            claim.measured = claim.claimed = int(size)
            claim.save(update_fields=["measured", "claimed"])


# --- ending ---------------------------------------------------------------------------


def _end_run(instance: Instance, exit_code: int | None, signal: str, last_lines: str) -> None:
    InstanceRun.objects.filter(instance=instance, ended_at__isnull=True).update(
        ended_at=timezone.now(),
        exit_code=exit_code,
        exit_signal=signal,
        last_lines=last_lines[-8000:],
    )


def do_mark_failed(
    instance: Instance,
    error: str,
    exit_code: int | None = None,
    signal: str = "",
    last_lines: str = "",
) -> bool:
    """The backend died or could not start: claims released, a restart after a backoff."""
    restarts = instance.restart_count + 1
    had_process = bool(instance.server_pid)  # its memory is in the GPUs' last readings
    with transaction.atomic():
        moved = move(
            instance,
            (*PROCESS_STATES, S.SCHEDULED, S.WAITING_FOR_FILES),
            S.FAILED,
            last_error=error[:4000],
            reason=error[:4000],
            restart_count=restarts,
            next_attempt_at=timezone.now() + backoff(restarts),
            pid=None,
            server_pid=None,
            port=None,
        )
        if moved:
            release_claims(instance, running=had_process)
            _end_run(instance, exit_code, signal, last_lines)
    if moved:
        logger.warning("instance %s failed: %s", instance, error)
    return moved


def do_requeue_failed(now: Any = None) -> int:
    """Failed instances whose backoff is over go back to pending (to be placed again)."""
    now = now or timezone.now()
    due = Instance.objects.filter(
        state=S.FAILED, next_attempt_at__lte=now, deployment__desired_state="running"
    )
    count = 0
    for instance in due:
        count += move(
            instance, (S.FAILED,), S.PENDING, node=None, next_attempt_at=None, pending_since=now
        )
    return count


def do_back_to_pending(instance: Instance, reason: str) -> bool:
    """A placed instance that cannot start where it was placed (its file cannot be had)."""
    retry_at = timezone.now() + backoff(instance.restart_count + 1)
    return _unstarted_to_pending(instance, reason, retry_at)


def _unstarted_to_pending(instance: Instance, reason: str, retry_at: datetime | None) -> bool:
    """Placed but not started → pending, off its node, claims released."""
    with transaction.atomic():
        moved = move(
            instance,
            (S.SCHEDULED, S.WAITING_FOR_FILES),
            S.PENDING,
            pending_since=timezone.now(),
            reason=reason[:4000],
            node=None,
            model_file=None,
            next_attempt_at=retry_at,
        )
        if moved:
            release_claims(instance)
    return moved


def do_request_stop(instance: Instance, with_replaced: bool = True) -> bool:
    """Stop an instance: its process (if any) through the node's worker, else at once.

    A replacement and the instance it replaces count as one replica
    (``scheduling.replacing``): stopping the replacement stops that replica, so the
    replaced instance stops too, unless ``with_replaced`` is False (failover and drain
    cancelling a replacement that is no longer needed)."""
    with transaction.atomic():
        stopped = _request_stop(instance)
        if stopped and with_replaced and instance.replaces_id is not None:
            replaced = Instance.objects.filter(pk=instance.replaces_id).first()
            if replaced is not None and replaced.state not in (S.STOPPING, S.STOPPED):
                do_request_stop(replaced)
    return stopped


def _request_stop(instance: Instance) -> bool:
    if move(instance, (S.PENDING, S.FAILED), S.STOPPED, next_attempt_at=None):
        return True
    if move(instance, (S.SCHEDULED, S.WAITING_FOR_FILES), S.STOPPED):
        release_claims(instance)
        return True
    if move(instance, (S.STARTING, S.RUNNING, S.UNREACHABLE), S.STOPPING):
        enqueue(instance, STOP_TASK)
        return True
    return instance.state in (S.STOPPING, S.STOPPED)


def do_unplace(instance: Instance, reason: str) -> bool:
    """A placed instance that has not started, on a node that was lost or is draining:
    back to pending at once (no backoff), claims released, to be placed elsewhere. A
    start task still queued for the old node finds it no longer scheduled."""
    return _unstarted_to_pending(instance, reason, retry_at=None)


def do_mark_stopped(instance: Instance, exit_code: int | None = None, signal: str = "") -> bool:
    with transaction.atomic():
        moved = move(instance, (S.STOPPING,), S.STOPPED, pid=None, server_pid=None, port=None)
        if moved:
            release_claims(instance, running=True)
            _end_run(instance, exit_code, signal, "")
    return moved


def do_mark_unreachable(node_id: Any) -> int:
    """The node went offline: its backends cannot be seen (claims are kept)."""
    count = 0
    for instance in Instance.objects.filter(node_id=node_id, state__in=(S.STARTING, S.RUNNING)):
        reason = "Its node is offline: the backend cannot be reached."
        count += move(instance, (S.STARTING, S.RUNNING), S.UNREACHABLE, reason=reason)
    return count


def do_note_gateway_failure(instance_id: Any, failure: str) -> bool:
    """The gateway could not use a running instance: say so on it (the agent's supervisor
    decides whether the process is dead). True when a running instance was noted."""
    note = f"The gateway could not use it: {failure}"[:4000]
    updated = Instance.objects.filter(pk=instance_id, state=S.RUNNING).update(reason=note)
    if updated:
        instance = Instance.objects.select_related("deployment").get(pk=instance_id)
        events.instance_changed(instance)
    return bool(updated)
