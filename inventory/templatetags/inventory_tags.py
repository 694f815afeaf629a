from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from django import template
from django.urls import reverse

from inventory.presenters import GpuRow, gpu_state

register = template.Library()


@register.filter(name="gpu_state")
def gpu_state_filter(row: GpuRow) -> str:
    return gpu_state(row)


@register.filter
def mib(value: int | None) -> str:
    return "–" if value is None else f"{int(value) // (1024 * 1024):,}"


@register.filter
def gib(value: int | None) -> str:
    return "–" if value is None else f"{int(value) / 1024**3:.1f}"


@register.filter
def gib0(value: int | None) -> str:
    """Bytes as whole GiB (a node's one-line summary)."""
    return "–" if value is None else f"{round(int(value) / 1024**3):,}"


@register.filter
def bytes_short(value: int | None) -> str:
    """Bytes in GiB, or TiB from 10 TiB on (the fleet summary)."""
    if value is None:
        return "–"
    if value >= 10 * 1024**4:
        return f"{value / 1024**4:.1f} TiB"
    return f"{value / 1024**3:,.0f} GiB"


def _whole(value: float) -> int:
    """Rounded half up, as ``floatformat:0`` shows it (values here are never negative)."""
    return int(value + 0.5)


@lru_cache(maxsize=1)
def _gpu_url_pattern() -> str:
    return reverse("inventory:gpu", args=[_PLACEHOLDER])


_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


def _row_view(row: GpuRow) -> dict[str, Any]:
    temperature, power = row["temperature"], row["power_draw"]
    return {
        **row,
        "state": gpu_state(row),
        "url": _gpu_url_pattern().replace(_PLACEHOLDER, str(row["id"])),
        "util": _whole(row["utilization"]),
        "mem_pct_whole": _whole(row["memory_pct"]),
        "used_mib": mib(row["memory_used"]),
        "total_mib": mib(row["memory_total"]),
        "claimed_mib": mib(row["claimed"]),
        "load_whole": _whole(row["load_pct"]),
        "temp": None if temperature is None else _whole(temperature),
        "power": None if power is None else _whole(power),
        "power_limit_whole": _whole(row["power_limit"]),
    }


@register.filter
def gpu_row_views(rows: Iterable[GpuRow]) -> list[dict[str, Any]]:
    """GPU rows with what ``_gpu_rows.html`` shows worked out in Python: the overview
    renders 1,600 of them a second, and template filters per cell are what costs."""
    return [_row_view(row) for row in rows]
