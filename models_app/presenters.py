"""What the estimate page draws: per device, the components as shares of one scale."""

from __future__ import annotations

from dataclasses import dataclass

from models_app.estimate_service import Report
from models_app.estimator import COMPONENTS, DeviceEstimate, Estimate
from models_app.estimator.explain import ranges

COMPONENT_LABELS = {
    "weights": "Weights",
    "kv_cache": "KV cache",
    "compute": "Compute buffer",
    "output": "Output buffer",
    "overhead": "CUDA overhead",
}


@dataclass(frozen=True, slots=True)
class Segment:
    component: str
    label: str
    bytes: int
    percent: float  # of the bar's full width


@dataclass(frozen=True, slots=True)
class Bar:
    device: str
    label: str
    is_gpu: bool
    total: int
    free_bytes: int | None
    fits: bool
    layers: str
    segments: tuple[Segment, ...]
    free_percent: float | None  # where the free-memory line is drawn


def _scale(result: Estimate, margin: int) -> int:
    sizes = [device.total + (margin if device.is_gpu else 0) for device in result.devices]
    sizes += [device.free_bytes or 0 for device in result.devices]
    return max([*sizes, 1])


def _bar(report: Report, device: DeviceEstimate, scale: int) -> Bar:
    segments = tuple(
        Segment(name, COMPONENT_LABELS[name], size, round(100 * size / scale, 3))
        for name in COMPONENTS
        if (size := device.component(name)) > 0
    )
    free = device.free_bytes
    return Bar(
        device=device.device,
        label=report.label_of(device.device),
        is_gpu=device.is_gpu,
        total=device.total,
        free_bytes=free,
        fits=device.fits(report.margin_bytes),
        layers=ranges(device.layers),
        segments=segments,
        free_percent=None if free is None else round(100 * free / scale, 3),
    )


def bars(report: Report) -> list[Bar]:
    """One bar per device (the GPUs, then the CPU), all drawn to the same scale."""
    scale = _scale(report.estimate, report.margin_bytes)
    return [_bar(report, device, scale) for device in report.estimate.devices]


@dataclass(frozen=True, slots=True)
class Cell:
    component: str
    bytes: int
    learned: str  # how it was learned ("" when computed)


def breakdown(report: Report) -> list[tuple[DeviceEstimate, list[Cell]]]:
    """The table under the bars: per device its components, each saying whether it was
    learned from a measurement rather than computed."""
    rows = []
    for device in report.estimate.devices:
        learned = report.learned_on(device.device)
        cells = [
            Cell(name, device.component(name), learned[name].text if name in learned else "")
            for name in COMPONENTS
        ]
        rows.append((device, cells))
    return rows


def split_text(split: tuple[float, ...] | None) -> str:
    """A tensor split as shares: ``(3.0, 1.0)`` → ``75% / 25%``."""
    if not split or sum(split) <= 0:
        return ""
    total = sum(split)
    return " / ".join(f"{100 * part / total:.0f}%" for part in split)
