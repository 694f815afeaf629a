"""Usage of the gateway over a window (last hour, day or week), read from ``UsageMinute``:
totals per served name and per key, and per served name a series of requests and tokens
per minute, bucketed to at most ``MAX_POINTS`` points and drawn with ``inventory.charts``.

The page and the REST API both read it from here."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict, get_args
from uuid import UUID

from django.db.models import F, QuerySet, Sum
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from gateway.models import UsageMinute
from inventory.charts import ChartSpec, nice_step, render_chart, summary

MAX_POINTS = 120
SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms_sum",
    "ttft_count",
    "queue_ms_sum",
    "cold_starts",
)


@dataclass(frozen=True)
class Window:
    label: str
    seconds: int

    @property
    def bucket(self) -> int:
        """Seconds per chart point: whole minutes, at most ``MAX_POINTS`` points."""
        return 60 * max(1, math.ceil(self.seconds / MAX_POINTS / 60))


WindowName = Literal["1h", "24h", "7d"]
WINDOWS: dict[str, Window] = {
    "1h": Window("Last hour", 3600),
    "24h": Window("Last 24 hours", 86400),
    "7d": Window("Last 7 days", 7 * 86400),
}
DEFAULT_WINDOW: WindowName = "24h"
assert set(get_args(WindowName)) == set(WINDOWS)


class Chart(TypedDict):
    title: str
    svg: SafeString
    summary: str


def window_start(window: str, now: datetime) -> datetime:
    """The first minute of the window, which ends with the current minute (rows are per
    whole minute, so the chart's buckets end where the window does)."""
    this_minute = now.replace(second=0, microsecond=0)
    return this_minute + timedelta(seconds=60 - WINDOWS[window].seconds)


def usage_rows(
    start: datetime, served_name: str | None = None, key_id: UUID | None = None
) -> QuerySet[UsageMinute]:
    rows = UsageMinute.objects.filter(minute__gte=start)
    if served_name:
        rows = rows.filter(served_name=served_name)
    if key_id is not None:
        rows = rows.filter(key_id=key_id)
    return rows


def totals(sums: dict[str, Any]) -> dict[str, Any]:
    """Plain totals from the ``Sum`` of each column (``None`` where no row matched)."""
    value = {field: sums.get(field) or 0 for field in SUMS}
    ttft_count, requests = value["ttft_count"], value["requests"]
    return {
        "requests": int(requests),
        "errors": int(value["errors"]),
        "prompt_tokens": int(value["prompt_tokens"]),
        "completion_tokens": int(value["completion_tokens"]),
        "mean_ttft_ms": round(value["ttft_ms_sum"] / ttft_count, 1) if ttft_count else None,
        "mean_queue_ms": round(value["queue_ms_sum"] / requests, 1) if requests else None,
        "cold_starts": int(value["cold_starts"]),
    }


def _sums() -> dict[str, Sum]:
    return {field: Sum(field) for field in SUMS}


def usage_report(rows: QuerySet[UsageMinute]) -> dict[str, Any]:
    """Totals overall, per served name (busiest first) and per key (``key_id`` None: the
    key was deleted)."""
    by_name = rows.order_by().values("served_name").annotate(**_sums())
    by_key = (
        rows.order_by()
        .values("key_id")
        .annotate(key_name=F("key__name"), key_prefix=F("key__prefix"), **_sums())
    )
    served = [{"served_name": r["served_name"], **totals(r)} for r in by_name]
    keys = [
        {
            "key_id": r["key_id"],
            "name": r["key_name"] or "(deleted key)",
            "prefix": r["key_prefix"] or "",
            **totals(r),
        }
        for r in by_key
    ]
    return {
        "totals": totals(rows.order_by().aggregate(**_sums())),
        "served_names": sorted(served, key=lambda r: (-r["requests"], r["served_name"])),
        "keys": sorted(keys, key=lambda r: (-r["requests"], r["name"])),
    }


# --- charts ------------------------------------------------------------------------------


def per_minute_series(
    minutes: list[tuple[float, float]], start: float, end: float, bucket: int
) -> list[tuple[float, float]]:
    """Sum ``(epoch second, count)`` into ``bucket``-second buckets from ``start`` to
    ``end`` and give each as a rate per minute at the bucket's middle. Buckets without a
    row are zero: no row means no request in that minute."""
    count = max(1, math.ceil((end - start) / bucket))
    sums = [0.0] * count
    for t, value in minutes:
        index = int((t - start) // bucket)
        if 0 <= index < count:
            sums[index] += value
    per_minute = bucket / 60
    return [(start + (i + 0.5) * bucket, s / per_minute) for i, s in enumerate(sums)]


def nice_ceiling(value: float) -> float:
    """The chart's top: ``value`` rounded up to a round step (at least 1)."""
    if value <= 1:
        return 1.0
    step = nice_step(value)
    return math.ceil(value / step - 1e-9) * step


def _minute_rows(rows: QuerySet[UsageMinute]) -> dict[str, list[tuple[float, float, float]]]:
    """Per served name: ``(minute's start, requests, tokens)`` summed over keys."""
    grouped = (
        rows.order_by("minute")
        .values("served_name", "minute")
        .annotate(r=Sum("requests"), p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    )
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for row in grouped:
        tokens = float((row["p"] or 0) + (row["c"] or 0))
        series[row["served_name"]].append((row["minute"].timestamp(), float(row["r"]), tokens))
    return series


def _chart(title: str, kind: str, points: list[tuple[float, float]], window: str) -> Chart:
    half = WINDOWS[window].bucket / 2
    spec = ChartSpec(
        title=f"{title}, {WINDOWS[window].label.lower()}",
        points=points,
        start=points[0][0] - half,
        end=points[-1][0] + half,
        y_max=nice_ceiling(max(v for _, v in points)),
        unit="/min",
        kind=kind,
        tz=timezone.get_current_timezone(),
    )
    # Safe: the SVG is built from numbers, and inventory.charts escapes every text in it.
    return {"title": title, "svg": mark_safe(render_chart(spec)), "summary": summary(spec)}


def usage_charts(rows: QuerySet[UsageMinute], window: str, now: datetime) -> list[dict[str, Any]]:
    """Per served name (by name): its requests and tokens per minute as two SVG charts."""
    bucket = WINDOWS[window].bucket
    start = window_start(window, now).timestamp()
    end = start + WINDOWS[window].seconds
    charts: list[dict[str, Any]] = []
    for served_name, minutes in sorted(_minute_rows(rows).items()):
        requests = per_minute_series([(t, r) for t, r, _ in minutes], start, end, bucket)
        tokens = per_minute_series([(t, k) for t, _, k in minutes], start, end, bucket)
        figures = [
            _chart("Requests per minute", "util", requests, window),
            _chart("Tokens per minute", "memory", tokens, window),
        ]
        charts.append({"served_name": served_name, "figures": figures})
    return charts
