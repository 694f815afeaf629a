"""Reading a GPU's history from ``GpuSample`` for a time range.

Each range names the resolution that covers it (``RANGES``): the last hour is the
1-minute series plus the raw 1 s samples newer than the last minute row (the minute
rows lag behind by up to a housekeeping period), the last day is the 1-minute series,
the last week the 15-minute series (each also topped up with the finer samples that
are not rolled up yet). ``downsample`` brings any series down to a few hundred points
for drawing; it and ``format_duration`` are plain functions that need no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from django.utils import timezone

from inventory.choices import Resolution
from inventory.models import Gpu, GpuSample

MAX_POINTS = 300


@dataclass(frozen=True)
class RangeSpec:
    label: str
    seconds: int
    resolution: Resolution
    tail: Resolution


RANGES: dict[str, RangeSpec] = {
    "hour": RangeSpec("Last hour", 3600, Resolution.MINUTE, Resolution.RAW),
    "day": RangeSpec("Last day", 86400, Resolution.MINUTE, Resolution.RAW),
    "week": RangeSpec("Last week", 7 * 86400, Resolution.QUARTER, Resolution.MINUTE),
}


class Sample(NamedTuple):
    """One point of history: ``t`` in epoch seconds (middle of its span)."""

    t: float
    utilization: float
    memory_used: float


@dataclass(frozen=True)
class History:
    range_name: str
    start: float
    end: float
    samples: list[Sample]
    resolution: int

    def series(self, field: str, scale: float = 1.0) -> list[tuple[float, float]]:
        """``(t, value / scale)`` for ``field`` (``utilization`` or ``memory_used``)."""
        index = Sample._fields.index(field)
        return [(s.t, float(s[index]) / scale) for s in self.samples]


def _rows(gpu: Gpu, resolution: int, since: datetime, until: datetime) -> list[Sample]:
    offset = resolution / 2 if resolution > 1 else 0.0
    rows = (
        GpuSample.objects.filter(gpu=gpu, resolution=resolution, ts__gte=since, ts__lte=until)
        .order_by("ts")
        .values_list("ts", "utilization", "memory_used")
    )
    return [Sample(ts.timestamp() + offset, util, float(mem)) for ts, util, mem in rows]


def load_history(gpu: Gpu, range_name: str, now: datetime | None = None) -> History:
    """The samples of ``gpu`` over the named range, oldest first (``KeyError`` if unknown)."""
    spec = RANGES[range_name]
    now = now or timezone.now()
    start = now - timedelta(seconds=spec.seconds)
    samples = _rows(gpu, spec.resolution, start, now)
    tail_from = start
    if samples:
        last_span = samples[-1].t - spec.resolution / 2
        tail_from = max(start, _from_epoch(last_span + spec.resolution))
    samples += _rows(gpu, spec.tail, tail_from, now)
    return History(range_name, start.timestamp(), now.timestamp(), samples, spec.resolution)


def _from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.get_current_timezone())


def downsample(
    points: Sequence[tuple[float, float]], start: float, end: float, max_points: int = MAX_POINTS
) -> list[tuple[float, float]]:
    """Average ``points`` into at most ``max_points`` equal time buckets over [start, end].

    Series that are already short enough come back unchanged; empty buckets stay empty,
    so gaps in the history stay visible."""
    if len(points) <= max_points or end <= start:
        return list(points)
    width = (end - start) / max_points
    sums: dict[int, list[float]] = {}
    for t, value in points:
        bucket = min(max(int((t - start) // width), 0), max_points - 1)
        acc = sums.setdefault(bucket, [0.0, 0.0, 0.0])
        acc[0] += t
        acc[1] += value
        acc[2] += 1
    return [(acc[0] / acc[2], acc[1] / acc[2]) for _, acc in sorted(sums.items())]


def gap_seconds(history: History, points: int) -> float:
    """Spacing above which two neighbouring points are drawn as a gap, not a line."""
    bucket = (history.end - history.start) / max(points, 1)
    return 3 * max(float(history.resolution), bucket)


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 12 s``, ``2 h 5 min``, ``3 d 4 h``; ``–`` for None."""
    if seconds is None:
        return "–"
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"
