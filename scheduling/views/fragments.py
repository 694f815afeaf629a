"""What the deployment fragments show, for the pages and the websocket alike: rows of
the list, the summary of one deployment, its instances (memory per device, runs, the
backend's own readings) and the memory bar of each GPU it uses (every claim on it,
foreign use, free)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.db.models import Prefetch, QuerySet

from inventory.models import Gpu
from inventory.presenters import gpu_row
from scheduling import backend_logs, evicting
from scheduling.choices import Backend, InstanceState
from scheduling.models import Deployment, GpuClaim, Instance, InstanceRun
from scheduling.presenters import estimate_notes, readings_data

S = InstanceState
LOG_STATES = (S.STARTING, S.RUNNING)  # the log tail polls while an instance is in these
RUNS_SHOWN = 10
LOG_LINES = 100
BACKEND_NAMES: dict[str, str] = {
    Backend.LLAMA_SERVER.value: "llama-server",
    Backend.LLAMA_CPP_PYTHON.value: "llama-cpp-python",
}


# --- the list ---------------------------------------------------------------------------


def state_counts(instances: Iterable[Instance]) -> list[tuple[str, str, int]]:
    """(state, its label, count) of the instances that have not ended, in machine order."""
    counts = Counter(i.state for i in instances if i.state != S.STOPPED)
    return [(value, label, counts[value]) for value, label in S.choices if counts[value]]


def load(instances: Iterable[Instance]) -> dict[str, Any] | None:
    """Readings of a deployment's running instances together: slots busy of slots,
    tokens per second and deferred requests summed (None: no readings)."""
    shown = [r for r in (readings_data(i) for i in instances) if r]
    if not shown:
        return None
    speeds = [r["tokens_per_second"] for r in shown if r["tokens_per_second"] is not None]
    return {
        "slots": sum(r["slots"] for r in shown),
        "busy": sum(r["busy"] for r in shown),
        "deferred": sum(r["deferred"] for r in shown),
        "tokens_per_second": round(sum(speeds), 1) if speeds else None,
    }


def deployment_row(deployment: Deployment) -> dict[str, Any]:
    instances = list(deployment.instances.all())
    return {
        "deployment": deployment,
        "running": sum(1 for i in instances if i.state == S.RUNNING),
        "wanted": deployment.wanted_replicas,
        "counts": state_counts(instances),
        "backend": BACKEND_NAMES.get(deployment.backend, deployment.backend),
        "load": load(instances),
    }


def deployments() -> QuerySet[Deployment]:
    return Deployment.objects.select_related("model").prefetch_related("instances")


def list_rows() -> list[dict[str, Any]]:
    return [deployment_row(d) for d in deployments().order_by("served_name")]


def one_row(deployment_id: Any) -> dict[str, Any] | None:
    deployment = deployments().filter(pk=deployment_id).first()
    return deployment_row(deployment) if deployment else None


# --- one deployment ---------------------------------------------------------------------


def get_deployment(deployment_id: Any) -> Deployment | None:
    related = deployments().prefetch_related("only_gpus__node", "exclude_gpus__node")
    return related.filter(pk=deployment_id).first()


def summary_context(deployment: Deployment, operator: bool) -> dict[str, Any]:
    starts = recent_starts(deployment)
    return {
        "deployment": deployment,
        "row": deployment_row(deployment),
        "can_operate": operator,
        "only_gpus": list(deployment.only_gpus.all()),
        "exclude_gpus": list(deployment.exclude_gpus.all()),
        "starts": starts,
        "start_estimate": start_estimate(starts),
        "evictions": evicting.recent(deployment),
    }


def recent_starts(deployment: Deployment, limit: int = 5) -> list[InstanceRun]:
    """The last starts that became ready, with their phases (any instance, stopped too)."""
    runs = InstanceRun.objects.filter(instance__deployment=deployment, ready_at__isnull=False)
    return list(runs.select_related("node").order_by("-ready_at")[:limit])


def start_estimate(starts: list[InstanceRun]) -> float | None:
    """About how long a cold start takes: the last measured one, all phases."""
    for run in starts:
        if run.phases:
            return round(sum(run.phases.values()), 1)
    return None


def _instances() -> QuerySet[Instance]:
    claims = GpuClaim.objects.select_related("gpu__node").order_by("position")
    runs = InstanceRun.objects.order_by("-number")
    return Instance.objects.select_related("node", "deployment").prefetch_related(
        Prefetch("claims", queryset=claims), Prefetch("runs", queryset=runs)
    )


def _device_order(name: str) -> tuple[int, int]:
    if name.startswith("CUDA") and name[4:].isdigit():
        return 0, int(name[4:])
    return 1, 0


def device_rows(instance: Instance, claims: list[GpuClaim]) -> list[dict[str, Any]]:
    """Estimated vs measured bytes per device (CUDA0…, CPU), labelled with the GPU."""
    labels = {f"CUDA{c.position}": f"{c.gpu.node.name}/gpu{c.gpu.index}" for c in claims}
    estimated, measured = instance.estimated or {}, instance.measured or {}
    rows = []
    for device in sorted({*estimated, *measured}, key=_device_order):
        est, real = estimated.get(device), measured.get(device)
        if not est and not real:
            continue
        rows.append(
            {
                "device": device,
                "label": labels.get(device, "host RAM" if device == "CPU" else ""),
                "estimated": est,
                "measured": real,
                "over": bool(est and real and real > est),
            }
        )
    return rows


def log_context(instance: Instance, run: InstanceRun | None) -> dict[str, Any]:
    """The last lines of a run's log, if this process can read the file."""
    path = Path(run.log_path) if run and run.log_path else None
    readable = path is not None and path.is_file()
    return {
        "instance": instance,
        "run": run,
        "lines": backend_logs.tail(path, lines=LOG_LINES) if path and readable else [],
        "readable": readable,
    }


def instance_context(instance: Instance) -> dict[str, Any]:
    claims = list(instance.claims.all())
    runs = list(instance.runs.all())
    return {
        "instance": instance,
        "log": log_context(instance, runs[0] if runs else None),
        "claims": claims,
        "devices": device_rows(instance, claims),
        "runs": runs[:RUNS_SHOWN],
        "more_runs": max(len(runs) - RUNS_SHOWN, 0),
        "current_run": runs[0] if runs else None,
        "polls_log": instance.state in LOG_STATES,
        "readings": readings_data(instance),
    }


def instance_items(deployment: Deployment) -> list[dict[str, Any]]:
    live = _instances().filter(deployment=deployment).exclude(state=S.STOPPED)
    return [instance_context(i) for i in live.order_by("created_at")]


def instance_readings(instance_id: Any) -> dict[str, Any] | None:
    """Just what the readings cell of an instance row needs (no log, claims or runs)."""
    instance = Instance.objects.filter(pk=instance_id).first()
    return {"instance": instance, "readings": readings_data(instance)} if instance else None


def one_instance(instance_id: Any) -> dict[str, Any] | None:
    instance = _instances().filter(pk=instance_id).first()
    return instance_context(instance) if instance else None


# --- GPU memory -------------------------------------------------------------------------


def _pct(part: int, total: int) -> float:
    return round(100 * part / total, 2) if total else 0.0


def _segment(claim: GpuClaim, ours: bool, total: int) -> dict[str, Any]:
    instance = claim.instance
    return {
        "kind": "ours" if ours else "other",
        "label": f"{instance.deployment.served_name} #{instance.short_id}",
        "bytes": claim.claimed,
        "measured": claim.measured is not None,
        "pct": _pct(claim.claimed, total),
    }


def gpu_bar(gpu: Gpu, deployment_id: Any) -> dict[str, Any]:
    """Every claim on ``gpu`` (this deployment's first), foreign use, reserve and free."""
    total = gpu.memory_total or 1
    mine = str(deployment_id)
    claims = sorted(
        gpu.claims.select_related("instance__deployment"),
        key=lambda c: (str(c.instance.deployment_id) != mine, c.instance.created_at),
    )
    ours = [c for c in claims if str(c.instance.deployment_id) == mine]
    segments = [_segment(c, c in ours, total) for c in claims]
    foreign = gpu.foreign_memory
    claimed = sum(c.claimed for c in claims)
    free = max(total - gpu.reserved - claimed - foreign, 0)
    for kind, label, size in (
        ("foreign", "not ours", foreign),
        ("reserved", "reserved", gpu.reserved),
    ):
        if size:
            segments.append({"kind": kind, "label": label, "bytes": size, "pct": _pct(size, total)})
    row = gpu_row(gpu)
    return {
        "gpu": gpu,
        "label": f"{gpu.node.name}/gpu{gpu.index}",
        "segments": segments,
        "ours": sum(c.claimed for c in ours),
        "claimed": claimed,
        "free": free,
        "free_pct": _pct(free, total),
        "total": gpu.memory_total,
        "used": gpu.memory_used,
        "load_pct": row["load_pct"],
        "oom_risk": row["oom_risk"],
    }


def deployment_gpus(deployment_id: Any) -> list[Gpu]:
    """The GPUs this deployment's instances hold claims on."""
    gpus = Gpu.objects.filter(claims__instance__deployment_id=deployment_id).distinct()
    return list(gpus.select_related("node").order_by("node__name", "index"))


def deployment_node_ids(deployment_id: Any) -> set[str]:
    gpus = Gpu.objects.filter(claims__instance__deployment_id=deployment_id)
    return {str(node_id) for node_id in gpus.values_list("node_id", flat=True)}


def memory_context(deployment_id: Any) -> dict[str, Any]:
    bars = [gpu_bar(gpu, deployment_id) for gpu in deployment_gpus(deployment_id)]
    return {"bars": bars, "at_risk": [bar for bar in bars if bar["oom_risk"]]}


def detail_context(deployment: Deployment, operator: bool) -> dict[str, Any]:
    return (
        summary_context(deployment, operator)
        | memory_context(deployment.pk)
        | {"items": instance_items(deployment), "estimate_notes": estimate_notes(deployment)}
    )


def cold_starts() -> list[dict[str, Any]]:
    """Deployments whose requests wait for a cold start, with about how long it takes (the
    overview's panel: answered for inventory, see ``inventory.answers``)."""
    waiting = Deployment.objects.filter(waiting__gt=0).order_by("served_name")
    return [{"deployment": d, "estimate": start_estimate(recent_starts(d))} for d in waiting]
