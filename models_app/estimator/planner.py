"""The inverse questions: how many layers fit on these GPUs, and how long a context.

A setting "fits" when every GPU's estimated total plus ``margin_bytes`` is within
its free memory (and, if ``host_free_bytes`` is given, the host's total within it).
Memory grows with the number of offloaded layers and with the context, so both
searches bisect and then check their answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from models_app.estimator.context import CTX_PAD
from models_app.estimator.estimate import estimate
from models_app.estimator.result import Estimate
from models_app.estimator.settings import GpuDevice, RunSettings
from models_app.estimator.shape import ModelShape, prepare
from models_app.gguf import ModelFacts


@dataclass(frozen=True, slots=True)
class Plan:
    """Settings that fit (``fits`` False: even the least demanding one does not)."""

    settings: RunSettings
    estimate: Estimate
    fits: bool

    @property
    def n_gpu_layers(self) -> int:
        return self.settings.n_gpu_layers

    @property
    def n_ctx(self) -> int:
        return self.settings.n_ctx

    @property
    def tensor_split(self) -> tuple[float, ...] | None:
        return self.settings.tensor_split


def _fits(result: Estimate, margin_bytes: int, host_free_bytes: int | None) -> bool:
    if host_free_bytes is not None and result.cpu.total > host_free_bytes:
        return False
    return result.fits(margin_bytes)


def largest(low: int, high: int, ok: Callable[[int], bool]) -> int | None:
    """The largest value in [low, high] for which ``ok`` holds (assumed monotone)."""
    if not ok(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low


def budget_split(
    gpus: Sequence[GpuDevice], settings: RunSettings, margin_bytes: int
) -> tuple[float, ...]:
    """A tensor split by what each GPU has left after the margin and the fixed overhead."""
    room = [max(gpu.free_bytes - margin_bytes - settings.gpu_overhead_bytes, 0) for gpu in gpus]
    return tuple(float(item) for item in room) if any(room) else tuple(1.0 for _ in gpus)


def max_gpu_layers(
    model: ModelFacts | ModelShape,
    settings: RunSettings,
    gpus: Sequence[GpuDevice],
    margin_bytes: int = 0,
    host_free_bytes: int | None = None,
) -> Plan:
    """The most layers (of n_layer + 1) that fit, with the split that fits them.

    Tries the given split (default: by free memory, as llama.cpp) and a split by
    each GPU's room after margin and overhead; keeps whichever fits more layers.
    """
    shape = model if isinstance(model, ModelShape) else prepare(model)
    splits: list[tuple[float, ...] | None] = [settings.tensor_split]
    if len(gpus) > 1 and settings.tensor_split is None:
        splits.append(budget_split(gpus, settings, margin_bytes))
    best: Plan | None = None
    for split in splits:
        plan = _max_layers_for_split(
            shape, replace(settings, tensor_split=split), gpus, margin_bytes, host_free_bytes
        )
        if best is None or (plan.fits, plan.n_gpu_layers) > (best.fits, best.n_gpu_layers):
            best = plan
    assert best is not None
    return best


def _max_layers_for_split(
    shape: ModelShape,
    settings: RunSettings,
    gpus: Sequence[GpuDevice],
    margin_bytes: int,
    host_free_bytes: int | None,
) -> Plan:
    def at(n_gpu_layers: int) -> Estimate:
        return estimate(shape, replace(settings, n_gpu_layers=n_gpu_layers), gpus)

    def ok(n_gpu_layers: int) -> bool:
        return _fits(at(n_gpu_layers), margin_bytes, host_free_bytes)

    top = shape.n_layer + 1 if gpus else 0
    found = largest(0, top, ok)
    while found is not None and found > 0 and not ok(found):  # not monotone after all
        found -= 1
    chosen = 0 if found is None else found
    return Plan(replace(settings, n_gpu_layers=chosen), at(chosen), found is not None)


def max_context(
    model: ModelFacts | ModelShape,
    settings: RunSettings,
    gpus: Sequence[GpuDevice] = (),
    margin_bytes: int = 0,
    host_free_bytes: int | None = None,
    limit: int | None = None,
) -> Plan:
    """The longest context (a multiple of 256 per sequence) that fits.

    ``limit`` caps the search (default: the model's training context, at least 256,
    times the parallel sequences). Without GPUs give ``host_free_bytes``.
    """
    if not gpus and host_free_bytes is None:
        raise ValueError("with no GPUs, give host_free_bytes to fit the context into")
    shape = model if isinstance(model, ModelShape) else prepare(model)
    step = CTX_PAD * (1 if settings.kv_unified else max(settings.n_seq_max, 1))
    top = limit or max(shape.n_ctx_train, CTX_PAD) * max(settings.n_seq_max, 1)

    def at(units: int) -> Estimate:
        return estimate(shape, replace(settings, n_ctx=units * step), gpus)

    def ok(units: int) -> bool:
        return _fits(at(units), margin_bytes, host_free_bytes)

    found = largest(1, max(top // step, 1), ok)
    chosen = found or 1
    return Plan(replace(settings, n_ctx=chosen * step), at(chosen), found is not None)
