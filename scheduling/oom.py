"""OOM risk, live, per GPU and per instance, raised and cleared as alerts.

- A GPU is at risk when what is claimed on it plus what processes that are not ours
  use passes ``GPUFLEET_OOM_WARN`` (default 90 %) of what is usable (total less the
  reserve): ``inventory.presenters.memory_load``.
- An instance is over its estimate when the memory measured on one of its GPUs
  exceeds the estimate by more than ``GPUFLEET_PLACEMENT_MARGIN``: the estimate
  was wrong for this model and settings, and neighbours may run out.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from inventory import alerts
from inventory.choices import AlertKind, Severity
from inventory.models import Alert, Gpu, Node
from inventory.presenters import memory_load
from models_app.estimator import format_bytes
from scheduling.choices import InstanceState
from scheduling.models import GpuClaim, InstanceRun, backend_pids


def gpu_risk_key(gpu: Gpu) -> str:
    return f"{AlertKind.OOM_RISK}:{gpu.uuid}"


def estimate_key(claim: GpuClaim) -> str:
    return f"{AlertKind.ESTIMATE_EXCEEDED}:{claim.instance_id}:{claim.gpu_id}"


def gpu_message(gpu: Gpu, load: int) -> str | None:
    """The warning for this GPU, or None when it is not at risk."""
    usable = gpu.usable
    if usable and load < settings.GPUFLEET_OOM_WARN * usable:
        return None
    percent = 100 * load / usable if usable else 100.0
    return (
        f"GPU {gpu.index} on {gpu.node.name}: {percent:.0f}% of its usable memory is claimed or "
        f"in use ({format_bytes(load)} of {format_bytes(usable)}); new work may run out of memory."
    )


def check_node(node: Node) -> None:
    ours = backend_pids(gpu__node=node)
    for gpu in Gpu.objects.filter(node=node, present=True).with_claims().select_related("node"):
        message = gpu_message(gpu, memory_load(gpu, ours))
        if message:
            alerts.raise_alert(gpu_risk_key(gpu), AlertKind.OOM_RISK, message, node=node, gpu=gpu)
        else:
            alerts.clear_alert(gpu_risk_key(gpu))
    _check_estimates(node)
    check_released(node)


RELEASE_WITHIN = 30.0  # seconds a stopped backend's GPU memory may take to come back
RELEASE_WATCH = 600.0  # how long after a stop its memory is still looked for


def released_key(run: InstanceRun) -> str:
    return f"{AlertKind.MEMORY_NOT_RELEASED}:{run.pk}"


def check_released(node: Node, now: datetime | None = None) -> None:
    """A backend that stopped more than ``RELEASE_WITHIN`` s ago but whose pid NVML still
    lists on a GPU of the node has not given its memory back: an alert, until it has."""
    now = now or timezone.now()
    runs = InstanceRun.objects.filter(
        node=node, server_pid__isnull=False,
        ended_at__gte=now - timedelta(seconds=RELEASE_WATCH),
        ended_at__lte=now - timedelta(seconds=RELEASE_WITHIN),
    ).select_related("instance__deployment")  # fmt: skip
    holding = {
        int(process["pid"]): gpu
        for gpu in Gpu.objects.filter(node=node, present=True)
        for process in gpu.processes or []
        if isinstance(process, dict) and process.get("pid")
    }
    for run in runs:
        gpu = holding.get(run.server_pid or 0)
        if gpu is None:
            alerts.clear_alert(released_key(run))
            continue
        alerts.raise_alert(
            released_key(run), AlertKind.MEMORY_NOT_RELEASED,
            f"{run.instance.deployment.served_name} stopped at {run.ended_at:%H:%M:%S} but its "
            f"process {run.server_pid} still holds memory on GPU {gpu.index} of {node.name}.",
            severity=Severity.WARNING, node=node, gpu=gpu,
        )  # fmt: skip


def _check_estimates(node: Node) -> None:
    margin = settings.GPUFLEET_PLACEMENT_MARGIN
    over: set[str] = set()
    claims = GpuClaim.objects.filter(
        gpu__node=node, instance__state=InstanceState.RUNNING, measured__isnull=False
    ).select_related("gpu", "instance__deployment")
    for claim in claims:
        if claim.measured is not None and claim.measured > claim.estimated + margin:
            key = estimate_key(claim)
            over.add(key)
            alerts.raise_alert(
                key,
                AlertKind.ESTIMATE_EXCEEDED,
                f"{claim.instance.deployment.served_name} uses {format_bytes(claim.measured)} "
                f"on GPU {claim.gpu.index} of {node.name}, estimated "
                f"{format_bytes(claim.estimated)}.",
                severity=Severity.WARNING,
                node=node,
                gpu=claim.gpu,
            )
    stale = Alert.objects.active().filter(node=node, kind=AlertKind.ESTIMATE_EXCEEDED)
    for key in stale.exclude(key__in=over).values_list("key", flat=True):
        alerts.clear_alert(key)
