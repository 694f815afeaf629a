"""Filters for the model pages: parameter counts, transfer rates and durations."""

from __future__ import annotations

from django import template
from django.template.defaultfilters import filesizeformat

register = template.Library()


@register.filter
def params(value: int | None) -> str:
    """494032768 → ``494 M``; 7615616512 → ``7.6 B``."""
    if not value:
        return "?"
    for size, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if value >= size:
            number = value / size
            return f"{number:.1f} {unit}" if number < 10 else f"{number:.0f} {unit}"
    return str(value)


@register.filter
def rate(value: float | None) -> str:
    """Bytes per second as ``12.3 MB/s``; ``–`` when nothing moves."""
    return f"{filesizeformat(int(value))}/s" if value else "–"


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as ``42 s``, ``3 min 5 s`` or ``2 h 10 min``; ``–`` when unknown."""
    if seconds is None:
        return "–"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    return f"{total // 3600} h {total % 3600 // 60} min"
