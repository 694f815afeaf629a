"""The agent's part in keeping backends up, on its own node:

- on start, adopt the backend processes that still run for this node's instances and
  stop every backend process it does not know (``adopt``);
- every tick, mark failed the instances whose process died (exit status and last log
  lines kept; a restart follows after a backoff), refresh measured memory from NVML's
  per-process figures, start instances whose files arrived;
- every ``READINGS_EVERY``, read each running llama-server's own figures (slots busy,
  tokens/s, deferred requests, KV use: ``scheduling.readings``) into
  ``Instance.readings``, saved and sent as ``instance.readings`` only when what a page
  shows changed;
- for the whole fleet (the housekeeper; all are idempotent): instances of offline nodes
  become unreachable, failed ones whose backoff is over go back to pending, instances of
  lost and draining nodes are replaced (``scheduling.replacing``), and a placement pass
  places what is pending.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from inventory.choices import NodeStatus
from inventory.models import Gpu, Node
from inventory.probe.base import ProcessUsage
from scheduling import (
    actions,
    backend,
    backend_logs,
    lifecycle,
    measuring,
    oom,
    placement_pass,
    preparing,
    readings,
    replacing,
)
from scheduling import events as scheduling_events
from scheduling.choices import Backend, InstanceState
from scheduling.models import GpuClaim, Instance
from scheduling.tasks import fail_from_exit

logger = logging.getLogger("gpufleet.supervisor")
S = InstanceState
FLEET_EVERY = 2.0
MEASURE_EVERY = 5.0
READINGS_EVERY = 2.0  # read each running llama-server's /slots and /metrics
STRAYS_EVERY = 10.0  # look for backend processes that no instance accounts for
RESEND_EVERY = 5.0  # look for scheduled instances whose start task was lost
STOP_GRACE = 60.0  # a stopping instance whose process still runs after this is stopped here


class Supervisor:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.adopted = False
        self._due: dict[str, float] = {}
        self._samples: dict[str, readings.Sample] = {}  # the last reading per instance

    def _is_due(self, name: str, every: float, now: float) -> bool:
        if now >= self._due.get(name, 0.0):
            self._due[name] = now + every
            return True
        return False

    def tick(self, node: Node, now: float | None = None, housekeeper: bool = True) -> None:
        """One round on this node; ``housekeeper``: this agent holds the lease for the
        fleet-wide passes (inventory.leases)."""
        now = time.monotonic() if now is None else now
        self.node = node
        if not self.adopted:
            adopt(node)
            self.adopted = True
        check_processes(node)
        if self._is_due("resend", RESEND_EVERY, now):
            lifecycle.do_resend_lost_starts(node)  # start tasks the broker lost
        preparing.do_check_waiting(node)
        if self._is_due("measure", MEASURE_EVERY, now):
            refresh_measurements(node)
            oom.check_node(node)
        if self._is_due("readings", READINGS_EVERY, now):
            self._samples = take_readings(node, self._samples)
        if self._is_due("strays", STRAYS_EVERY, now):
            stop_strays(node)
        if housekeeper and self._is_due("fleet", FLEET_EVERY, now):
            fleet_housekeeping()


def adopt(node: Node) -> None:
    """After an agent (re)start: keep what runs for our instances, stop the rest."""
    known = stop_strays(node)
    for instance in known.values():
        _check_one(instance, adopting=True)


def stop_strays(node: Node) -> dict[str, Instance]:
    """Stop every backend process of this node that no watched instance accounts for
    (an instance stopped, failed or deleted meanwhile, a pid never recorded). A starting
    instance whose launch has not recorded its pids yet keeps its processes."""
    known = {str(i.pk): i for i in Instance.objects.filter(node=node, state__in=_WATCHED)}
    for process in backend.find_backends():
        if process.node != node.name:
            continue  # another node's backend on the same machine
        instance_id, pid = process.instance_id, process.pid
        instance = known.get(instance_id)
        if instance is not None and (
            pid in (instance.pid, instance.server_pid)
            or (instance.state == S.STARTING and not instance.server_pid)
        ):
            continue
        logger.warning("stopping backend process %s of untracked instance %s", pid, instance_id)
        backend.stop(pid, pid, instance_id=instance_id)
    return known


_WATCHED = (S.STARTING, S.RUNNING, S.UNREACHABLE, S.STOPPING)


def check_processes(node: Node) -> None:
    for instance in Instance.objects.filter(node=node, state__in=_WATCHED).select_related(
        "deployment"
    ):
        _check_one(instance, adopting=False)


def _check_one(instance: Instance, adopting: bool) -> None:
    alive = bool(instance.server_pid) and backend.is_running(
        instance.server_pid or 0, str(instance.pk)
    )
    if alive:
        if instance.state == S.UNREACHABLE:
            log = _read_log(instance)
            lifecycle.do_mark_running(instance, backend_logs.measured_memory(log))
            logger.info("adopted the running backend of %s", instance)
        elif instance.state == S.STOPPING and _age(instance) > STOP_GRACE:
            pids = (instance.pid or 0, instance.server_pid or 0)
            backend.stop(*pids, instance_id=str(instance.pk))  # its stop task was lost
        return
    if instance.state == S.STARTING and not _start_lost(instance):
        return  # its start task is still launching it
    run = instance.current_run
    if instance.state == S.STOPPING:
        lifecycle.do_mark_stopped(instance)
        actions.on_instance_ended(instance)
        return
    if run is None:
        lifecycle.do_mark_failed(instance, "The backend process is gone (no run recorded).")
        return
    fail_from_exit(instance, run, "The backend process died.")


def _age(instance: Instance) -> float:
    return (timezone.now() - instance.updated_at).total_seconds()


def _start_lost(instance: Instance) -> bool:
    """A starting instance whose launch recorded a pid that is gone, or that has been
    starting for longer than the start timeout allows (its task died)."""
    if instance.server_pid:
        return True
    started = instance.started_at or instance.updated_at
    limit = settings.GPUFLEET_BACKEND_START_TIMEOUT + 60
    return (timezone.now() - started).total_seconds() > limit


def _read_log(instance: Instance) -> str:
    run = instance.current_run
    return backend_logs.read_log(Path(run.log_path)) if run else ""


def refresh_measurements(node: Node) -> None:
    """NVML's per-process memory of each running backend replaces its GPU claims."""
    gpus = {gpu.pk: gpu for gpu in Gpu.objects.filter(node=node)}
    for instance in Instance.objects.filter(node=node, state=S.RUNNING).prefetch_related("claims"):
        measured = dict(instance.measured)
        nvml: dict[str, int] = {}
        for claim in instance.claims.all():
            gpu = gpus.get(claim.gpu_id)
            used = _process_memory(gpu, instance.server_pid) if gpu else None
            if used and abs(used - (claim.measured or 0)) > 1024**2:
                claim.measured = claim.claimed = used
                claim.save(update_fields=["measured", "claimed"])
                measured[f"CUDA{claim.position}"] = nvml[f"CUDA{claim.position}"] = used
        if nvml:
            Instance.objects.filter(pk=instance.pk).update(measured=measured)
            lifecycle.events.instance_changed(instance)
            measuring.record_nvml(instance, nvml)  # for later estimates to learn from


def take_readings(node: Node, previous: dict[str, readings.Sample]) -> dict[str, readings.Sample]:
    """Read every running llama-server of this node; save its ``readings`` and send
    ``instance.readings`` where what a page shows changed. Returns the samples to
    compare the next pass with (an instance that did not answer keeps its last one)."""
    running = Instance.objects.filter(
        node=node, state=S.RUNNING, backend=Backend.LLAMA_SERVER, port__isnull=False
    )
    instances = list(running.only("pk", "deployment_id", "node_id", "port", "readings"))
    samples = readings.read_many({str(i.pk): i.port for i in instances if i.port})
    kept: dict[str, readings.Sample] = {}
    changed: list[Instance] = []
    for instance in instances:
        key = str(instance.pk)
        sample = samples.get(key)
        if sample is None:
            if key in previous:
                kept[key] = previous[key]
            continue
        kept[key] = sample
        if _save_readings(instance, readings.summary(sample, previous.get(key))):
            changed.append(instance)
    if changed:
        scheduling_events.instances_read(changed)
    return kept


def _save_readings(instance: Instance, data: dict[str, object]) -> bool:
    """Store ``data`` unless a page would show the same; True when stored (and the
    instance still runs)."""
    if readings.shown(data) == readings.shown(instance.readings):
        return False
    return bool(Instance.objects.filter(pk=instance.pk, state=S.RUNNING).update(readings=data))


def _process_memory(gpu: Gpu, pid: int | None) -> int | None:
    for process in gpu.processes or []:
        if pid and process.get("pid") == pid:
            return int(process.get("memory_used") or 0) or None
    return None


def fleet_housekeeping() -> None:
    offline = Node.objects.exclude(
        status__in=(NodeStatus.ONLINE, NodeStatus.DRAINING, NodeStatus.MAINTENANCE)
    )
    for node in offline:
        lifecycle.do_mark_unreachable(node.pk)
    lifecycle.do_requeue_failed()
    actions.do_release_idle()
    replacing.do_replace_pass()  # failover, drain, and the rule for extras
    if placement_pass.pending_instances(limit=1):
        placement_pass.do_place_pending()


def simulated_workload(node: Node) -> dict[str, list[ProcessUsage]]:
    """What our backends would use on each simulated GPU of ``node``: their claims."""
    rows = GpuClaim.objects.filter(
        gpu__node=node, instance__state__in=(S.STARTING, S.RUNNING, S.STOPPING)
    ).values_list("gpu__uuid", "instance__server_pid", "claimed")
    usage: dict[str, list[ProcessUsage]] = {}
    for uuid, pid, claimed in rows:
        if pid:
            usage.setdefault(uuid, []).append(
                ProcessUsage(pid=pid, memory_used=claimed, name="llama_cpp.server")
            )
    return usage
