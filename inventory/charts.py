"""Server-side SVG charts: a time series drawn as a line over a filled area, with axes.

Plain Python, no Django: the caller passes points ``(epoch seconds, value)``, the time
range and the value range, and gets back an ``<svg>`` string to embed in a page. Text
in the SVG is escaped here; colours come from CSS classes (``line``/``area`` plus the
chart's ``kind``), with presentation attributes as a fallback outside the dashboard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from html import escape

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 60, 14, 14, 28
TIME_STEPS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800)
COLOURS = {"util": "#5ccf8a", "memory": "#9b8cff"}

Point = tuple[float, float]


@dataclass(frozen=True)
class ChartSpec:
    """What to draw: ``points`` between ``start`` and ``end`` (epoch seconds), values
    from 0 to ``y_max`` in ``unit``. Points further apart than ``gap`` are not joined."""

    title: str
    points: Sequence[Point]
    start: float
    end: float
    y_max: float
    unit: str
    kind: str = "util"
    gap: float | None = None
    references: Sequence[tuple[float, str]] = field(default_factory=tuple)
    tz: tzinfo = UTC


def _x(spec: ChartSpec, t: float) -> float:
    span = max(spec.end - spec.start, 1e-9)
    return LEFT + (t - spec.start) / span * (WIDTH - LEFT - RIGHT)


def _y(spec: ChartSpec, value: float) -> float:
    clamped = min(max(value, 0.0), spec.y_max) if spec.y_max > 0 else 0.0
    ratio = clamped / spec.y_max if spec.y_max > 0 else 0.0
    return HEIGHT - BOTTOM - ratio * (HEIGHT - TOP - BOTTOM)


def segments(points: Sequence[Point], gap: float | None) -> list[list[Point]]:
    """Split a time-ordered series wherever two neighbours are more than ``gap`` apart."""
    runs: list[list[Point]] = []
    for point in points:
        if runs and (gap is None or point[0] - runs[-1][-1][0] <= gap):
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def nice_step(y_max: float, max_ticks: int = 5) -> float:
    """A 1/2/2.5/5 × 10ⁿ step that splits 0..y_max into at most ``max_ticks`` parts."""
    if y_max <= 0:
        return 1.0
    raw = y_max / max_ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def y_ticks(y_max: float) -> list[float]:
    step = nice_step(y_max)
    count = int(y_max / step + 1e-9)
    return [round(i * step, 6) for i in range(count + 1)]


def time_ticks(start: float, end: float, tz: tzinfo, max_ticks: int = 7) -> list[float]:
    """Round local times (every 10 min, 3 h, a day …) between ``start`` and ``end``."""
    span = max(end - start, 1.0)
    step = next((s for s in TIME_STEPS if span / s <= max_ticks), TIME_STEPS[-1])
    offset = _utc_offset(start, tz)
    first = math.ceil((start + offset) / step) * step - offset
    ticks, t = [], first
    while t <= end:
        ticks.append(t)
        t += step
    return ticks


def _utc_offset(t: float, tz: tzinfo) -> float:
    delta = datetime.fromtimestamp(t, tz).utcoffset()
    return delta.total_seconds() if delta else 0.0


def _time_label(t: float, spec: ChartSpec) -> str:
    moment = datetime.fromtimestamp(t, spec.tz)
    if spec.end - spec.start > 2 * 86400:
        return moment.strftime("%a %d")
    return moment.strftime("%H:%M")


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _with_unit(value: float, unit: str) -> str:
    return f"{_number(value)}{unit}" if unit == "%" else f"{_number(value)} {unit}"


def _path(spec: ChartSpec, run: list[Point]) -> str:
    coords = [f"{_x(spec, t):.1f},{_y(spec, v):.1f}" for t, v in run]
    if len(coords) == 1:  # a lone point: a short dash so that it is visible
        x, y = _x(spec, run[0][0]), _y(spec, run[0][1])
        coords = [f"{x - 1.5:.1f},{y:.1f}", f"{x + 1.5:.1f},{y:.1f}"]
    return "M" + " L".join(coords)


def _area(spec: ChartSpec, run: list[Point], line: str) -> str:
    base = HEIGHT - BOTTOM
    x0, x1 = _x(spec, run[0][0]), _x(spec, run[-1][0])
    if len(run) == 1:
        x0, x1 = x0 - 1.5, x1 + 1.5
    return f"M{x0:.1f},{base} L{line[1:]} L{x1:.1f},{base} Z"


def _grid(spec: ChartSpec) -> list[str]:
    parts = ['<g class="grid" stroke="#263040" stroke-width="1">']
    for value in y_ticks(spec.y_max):
        y = _y(spec, value)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
    parts.append("</g>")
    parts.append('<g class="axis y" fill="#8391a7" font-size="11" text-anchor="end">')
    for value in y_ticks(spec.y_max):
        label = escape(_with_unit(value, spec.unit))
        parts.append(f'<text x="{LEFT - 6}" y="{_y(spec, value) + 4:.1f}">{label}</text>')
    parts.append("</g>")
    return parts


def _time_axis(spec: ChartSpec) -> list[str]:
    parts = ['<g class="axis x" fill="#8391a7" font-size="11" text-anchor="middle">']
    for t in time_ticks(spec.start, spec.end, spec.tz):
        x = _x(spec, t)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 4}"'
            f' stroke="#263040"/><text x="{x:.1f}" y="{HEIGHT - 10}">'
            f"{escape(_time_label(t, spec))}</text>"
        )
    parts.append("</g>")
    return parts


def _references(spec: ChartSpec) -> list[str]:
    parts = []
    for value, label in spec.references:
        y = _y(spec, value)
        parts.append(
            f'<g class="reference"><line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}"'
            f' y2="{y:.1f}" stroke="#f2c14e" stroke-dasharray="4 3"/>'
            f'<text x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" fill="#f2c14e" font-size="11"'
            f' text-anchor="end">{escape(label)}</text></g>'
        )
    return parts


def _series(spec: ChartSpec) -> list[str]:
    if not spec.points:
        x, y = (LEFT + WIDTH - RIGHT) / 2, (TOP + HEIGHT - BOTTOM) / 2
        return [
            f'<text class="no-data" x="{x:.0f}" y="{y:.0f}" fill="#8391a7" font-size="13"'
            ' text-anchor="middle">No data for this range yet</text>'
        ]
    colour = COLOURS.get(spec.kind, "#5fb3ff")
    kind = escape(spec.kind)
    parts = []
    for run in segments(spec.points, spec.gap):
        line = _path(spec, run)
        parts.append(
            f'<path class="area {kind}" d="{_area(spec, run, line)}" fill="{colour}"'
            ' fill-opacity="0.2" stroke="none"/>'
        )
        parts.append(
            f'<path class="line {kind}" d="{line}" fill="none" stroke="{colour}"'
            ' stroke-width="1.5" stroke-linejoin="round"/>'
        )
    return parts


def summary(spec: ChartSpec) -> str:
    """A one-line text version of the chart (for screen readers and tooltips)."""
    if not spec.points:
        return f"{spec.title}: no data."
    values = [v for _, v in spec.points]
    mean = sum(values) / len(values)
    figures = {"min": min(values), "mean": mean, "max": max(values), "latest": values[-1]}
    text = ", ".join(f"{name} {_with_unit(v, spec.unit)}" for name, v in figures.items())
    return f"{spec.title}: {text}."


def render_chart(spec: ChartSpec) -> str:
    """The chart as one ``<svg>`` element (scales to its container's width)."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' class="chart-svg" role="img" aria-label="{escape(summary(spec))}"'
        ' font-family="ui-sans-serif, system-ui, sans-serif">'
        f"<title>{escape(spec.title)}</title>"
    )
    body = _grid(spec) + _references(spec) + _series(spec) + _time_axis(spec)
    frame = (
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}"'
        f' height="{HEIGHT - TOP - BOTTOM}" fill="none" stroke="#263040"/>'
    )
    return head + "".join(body) + frame + "</svg>"
