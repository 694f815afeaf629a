"""Recording GPU readings, raising hardware alerts from them, and keeping history small.

History is one table at three resolutions: raw 1 s samples (kept 15 min by default),
1-minute means (2 days) and 15-minute means (35 days). For 64 GPUs that is about
58k + 184k + 215k rows, a few tens of MB on SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Avg, Max, QuerySet
from django.utils import timezone

from core import events
from core.models import LiveEvent
from inventory import alerts
from inventory.answers import answers
from inventory.choices import AlertKind, Resolution, Severity
from inventory.models import Alert, Gpu, GpuSample, Node
from inventory.presenters import gpu_row
from inventory.probe import GpuReading

TEMPERATURE_HYSTERESIS = 5.0


@transaction.atomic
def record_readings(
    node: Node, readings: Iterable[GpuReading], now: datetime | None = None
) -> None:
    """Store one tick of readings for a node and send its GPU rows to browsers."""
    now = now or timezone.now()
    gpus = {g.uuid: g for g in node.gpus.with_claims()}
    by_index = {g.index: g for g in gpus.values() if g.present}
    samples, changed = [], []
    seen: set[str] = set()
    active = set(Alert.objects.active().filter(node=node).values_list("key", flat=True))
    for reading in readings:
        gpu = gpus.get(reading.uuid) or by_index.get(reading.index)
        if gpu is None:
            continue
        seen.add(gpu.uuid)
        _apply(gpu, reading, now)
        changed.append(gpu)
        if reading.ok:
            samples.append(_sample(gpu, reading, now))
        _check_alerts(gpu, reading, active)
    for gpu in gpus.values():
        if gpu.uuid not in seen:
            _gpu_missing(gpu, active)
            changed.append(gpu)
    Gpu.objects.bulk_update(changed, _READING_FIELDS)
    # Memory given back before this reading is in it now.
    Gpu.objects.filter(node=node, released_at__lte=now).exclude(released=0).update(released=0)
    GpuSample.objects.bulk_create(samples, ignore_conflicts=True)
    ours = answers.backend_pids(gpu__node=node)
    rows = [gpu_row(g, ours) for g in sorted(gpus.values(), key=lambda g: g.index)]
    events.send("node.gpus", node_id=str(node.pk), rows=rows)


_READING_FIELDS = [
    "utilization",
    "memory_used",
    "temperature",
    "power_draw",
    "processes",
    "sampled_at",
    "error",
    "present",
]


def _apply(gpu: Gpu, reading: GpuReading, now: datetime) -> None:
    gpu.present = True
    gpu.error = reading.error[:255]
    if not reading.ok:
        return
    gpu.utilization = reading.utilization
    gpu.memory_used = reading.memory_used
    gpu.temperature = reading.temperature
    gpu.power_draw = reading.power_draw
    gpu.processes = [asdict(p) for p in reading.processes]
    gpu.sampled_at = now


def _sample(gpu: Gpu, reading: GpuReading, now: datetime) -> GpuSample:
    return GpuSample(
        gpu=gpu,
        ts=now.replace(microsecond=0),
        resolution=Resolution.RAW,
        utilization=reading.utilization,
        memory_used=reading.memory_used,
        temperature=reading.temperature,
        power_draw=reading.power_draw,
        processes=[asdict(p) for p in reading.processes] or None,
    )


def _raise(
    active: set[str],
    key: str,
    kind: AlertKind,
    message: str,
    gpu: Gpu,
    severity: Severity = Severity.WARNING,
) -> None:
    if key not in active:
        alerts.raise_alert(key, kind, message, severity=severity, node=gpu.node, gpu=gpu)


def _clear(active: set[str], key: str) -> None:
    if key in active:
        alerts.clear_alert(key)


def _check_alerts(gpu: Gpu, reading: GpuReading, active: set[str]) -> None:
    _clear(active, alerts.gpu_key(AlertKind.GPU_MISSING, gpu))
    error_key = alerts.gpu_key(AlertKind.GPU_ERROR, gpu)
    if not reading.ok:
        message = f"{gpu}: {reading.error}"
        _raise(active, error_key, AlertKind.GPU_ERROR, message, gpu, Severity.CRITICAL)
        return
    _clear(active, error_key)
    _check_temperature(gpu, reading.temperature, active)


def _check_temperature(gpu: Gpu, temperature: float | None, active: set[str]) -> None:
    if temperature is None:
        return
    key = alerts.gpu_key(AlertKind.GPU_TEMPERATURE, gpu)
    limit = settings.GPUFLEET_TEMPERATURE_ALERT_C
    if temperature >= limit:
        message = f"{gpu} is at {temperature:.0f} °C (threshold {limit} °C)."
        _raise(active, key, AlertKind.GPU_TEMPERATURE, message, gpu)
    elif temperature < limit - TEMPERATURE_HYSTERESIS:
        _clear(active, key)


def _gpu_missing(gpu: Gpu, active: set[str]) -> None:
    gpu.present = False
    message = f"{gpu} ({gpu.uuid}) has disappeared from the node."
    _raise(
        active,
        alerts.gpu_key(AlertKind.GPU_MISSING, gpu),
        AlertKind.GPU_MISSING,
        message,
        gpu,
        Severity.CRITICAL,
    )


# --- downsampling and retention -------------------------------------------------------


def rollup(gpu_ids: Iterable[UUID], source: int, target: int, now: datetime) -> int:
    """Average complete ``target``-second spans of ``source`` samples into one row each."""
    created = 0
    span_end = _floor(now, target)
    for gpu_id in gpu_ids:
        last = GpuSample.objects.filter(gpu_id=gpu_id, resolution=target).aggregate(m=Max("ts"))
        start = last["m"] + timedelta(seconds=target) if last["m"] else None
        qs = GpuSample.objects.filter(gpu_id=gpu_id, resolution=source, ts__lt=span_end)
        if start is not None:
            qs = qs.filter(ts__gte=start)
        first = qs.order_by("ts").values_list("ts", flat=True).first()
        if first is None:
            continue
        created += _rollup_spans(gpu_id, qs, _floor(first, target), span_end, target)
    return created


def _rollup_spans(
    gpu_id: UUID, qs: QuerySet[GpuSample], begin: datetime, end: datetime, target: int
) -> int:
    rows = []
    step = timedelta(seconds=target)
    cursor = begin
    while cursor < end:
        agg = qs.filter(ts__gte=cursor, ts__lt=cursor + step).aggregate(
            u=Avg("utilization"), m=Avg("memory_used"), t=Avg("temperature"), p=Avg("power_draw")
        )
        if agg["u"] is not None:
            rows.append(
                GpuSample(
                    gpu_id=gpu_id,
                    ts=cursor,
                    resolution=target,
                    utilization=agg["u"],
                    memory_used=int(agg["m"]),
                    temperature=agg["t"],
                    power_draw=agg["p"],
                )
            )
        cursor += step
    GpuSample.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _floor(moment: datetime, seconds: int) -> datetime:
    epoch = int(moment.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(epoch, tz=moment.tzinfo or timezone.get_current_timezone())


def housekeeping(node: Node, now: datetime | None = None) -> None:
    """Roll up this node's samples and drop what is past retention."""
    now = now or timezone.now()
    gpu_ids = list(node.gpus.values_list("pk", flat=True))
    rollup(gpu_ids, Resolution.RAW, Resolution.MINUTE, now)
    rollup(gpu_ids, Resolution.MINUTE, Resolution.QUARTER, now)
    retention = {
        Resolution.RAW: settings.GPUFLEET_RAW_RETENTION,
        Resolution.MINUTE: settings.GPUFLEET_MINUTE_RETENTION,
        Resolution.QUARTER: settings.GPUFLEET_QUARTER_RETENTION,
    }
    for resolution, seconds in retention.items():
        GpuSample.objects.filter(
            gpu_id__in=gpu_ids, resolution=resolution, ts__lt=now - timedelta(seconds=seconds)
        ).delete()
    LiveEvent.objects.filter(created_at__lt=now - timedelta(minutes=5)).delete()
