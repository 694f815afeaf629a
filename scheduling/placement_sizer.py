"""The real ``Sizer`` for placement: the memory estimator (models_app.estimator).

``EstimatorSizer(facts, settings, margin_bytes)`` answers placement's questions for
one model with its run settings. ``margin_bytes`` is kept free on every GPU it
places on (as in the estimator's ``fits``); the bytes it reports per GPU are the
estimate itself, without the margin, so they are what an instance claims.

- ``single_gpu_need``: the estimate with all layers on one GPU, plus the margin.
- ``on_gpus``: all layers; on several GPUs split by each GPU's room after margin and
  overhead (``planner.budget_split``); per-GPU totals if every GPU fits.
- ``partial``: the most layers that fit on the GPUs (as ``max_gpu_layers``), then
  the host check at that count. The host check is not left to ``max_gpu_layers``
  because its search starts from 0 layers on the GPUs, where the host holds the
  most, and would refuse a host that only holds the rest.
- ``cpu_only``: no GPUs, no layers offloaded.

``host_extra_bytes`` is host memory the backend takes beside llama.cpp's buffers
(llama-server's prompt cache, ``--cache-ram``): added to every host figure.

``learning`` (``models_app.learning.Learning``, optional): what running instances
measured for this model file; every estimate the sizer answers from carries it (the
figures learned replace the computed ones), and ``learned`` names them for the
placement reasons. The search for the most layers on several GPUs runs on computed
figures; its answer is then learned and checked again.

Split mode ``none`` keeps the model on one GPU, so ``on_gpus`` and ``partial``
answer None for several GPUs then. Everything runs on a ``ModelShape`` prepared
once (``prepare`` in ``__init__``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from models_app.estimator import (
    Estimate,
    GpuDevice,
    ModelShape,
    RunSettings,
    SplitMode,
    estimate,
    max_gpu_layers,
    prepare,
)
from models_app.estimator.planner import budget_split, largest
from models_app.gguf import ModelFacts
from scheduling.placement import Fit

if TYPE_CHECKING:
    from models_app.learning import Learning

logger = logging.getLogger("gpufleet.scheduling")
UNLIMITED = 1 << 60  # free bytes of the imaginary GPU the one-GPU figures are found on
MEMO_SIZE = 512  # answers for several GPUs kept, by their free sizes


def _devices(free: Sequence[int]) -> list[GpuDevice]:
    return [GpuDevice(name=f"CUDA{i}", free_bytes=int(size)) for i, size in enumerate(free)]


def _gpu_totals(result: Estimate) -> tuple[int, ...]:
    return tuple(device.total for device in result.devices if device.is_gpu)


class EstimatorSizer:
    """``scheduling.placement.Sizer`` over the estimator, for one model and settings.

    On one GPU the estimate does not depend on the GPU's free memory (only whether
    it fits does), so the figures per layer count are computed once and every later
    one-GPU question is a comparison. Answers for several GPUs are kept by their
    free sizes (``MEMO_SIZE`` of them): they are a pure function of them.
    """

    def __init__(
        self,
        model: ModelFacts | ModelShape,
        settings: RunSettings,
        margin_bytes: int = 0,
        host_extra_bytes: int = 0,
        learning: Learning | None = None,
    ) -> None:
        self.shape = model if isinstance(model, ModelShape) else prepare(model)
        self.learning = learning
        self.learned: dict[str, None] = {}  # what learned figures the answers used (ordered)
        self.settings = replace(settings, n_gpu_layers=-1, tensor_split=None, main_gpu=0)
        self.margin_bytes = margin_bytes
        self.host_extra_bytes = host_extra_bytes
        self._one: dict[int, tuple[int, int]] = {}  # layers offloaded -> (GPU, host) bytes
        self._memo: OrderedDict[tuple[str, tuple[int, ...]], Fit | None] = OrderedDict()
        self._cpu: int | None = None

    def _estimate(self, settings: RunSettings, gpus: Sequence[GpuDevice]) -> Estimate:
        """The estimate, with what measurements teach (``learning``) in place."""
        return self._learn(estimate(self.shape, settings, gpus), settings)

    def _learn(self, result: Estimate, settings: RunSettings) -> Estimate:
        if not self.learning:
            return result
        try:
            result, figures = self.learning.apply(result, settings)
        except Exception:  # learning must never cost a placement: computed figures
            logger.exception("applying the memory measurements failed")
            return result
        for figure in figures:
            self.learned[f"{figure.label} learned from {figure.source} ({figure.how})"] = None
        return result

    @property
    def learned_note(self) -> str:
        """The placement reasons' note on learned figures ("" when none were used)."""
        if not self.learned:
            return ""
        return "memory: " + "; ".join(self.learned)

    def _splittable(self, free: Sequence[int]) -> bool:
        return (
            bool(free)
            and any(size > 0 for size in free)
            and (len(free) == 1 or self.settings.split_mode is not SplitMode.NONE)
        )

    def _on_one(self, n_gpu_layers: int) -> tuple[int, int]:
        """GPU and host bytes with ``n_gpu_layers`` (of n_layer + 1) on one GPU."""
        if n_gpu_layers not in self._one:
            settings = replace(self.settings, n_gpu_layers=n_gpu_layers)
            result = self._estimate(settings, _devices([UNLIMITED]))
            host = result.cpu.total + self.host_extra_bytes
            self._one[n_gpu_layers] = (_gpu_totals(result)[0], host)
        return self._one[n_gpu_layers]

    def _remember(
        self, key: tuple[str, tuple[int, ...]], answer: Callable[[], Fit | None]
    ) -> Fit | None:
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        fit = self._memo[key] = answer()
        if len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)
        return fit

    def single_gpu_need(self) -> int:
        return self._on_one(self.shape.n_layer + 1)[0] + self.margin_bytes

    def on_gpus(self, free: Sequence[int]) -> Fit | None:
        if not self._splittable(free):
            return None
        if len(free) == 1:
            gpu, host = self._on_one(self.shape.n_layer + 1)
            return Fit((gpu,), host, -1) if gpu + self.margin_bytes <= free[0] else None
        return self._remember(("on", tuple(free)), lambda: self._on_several(free))

    def _on_several(self, free: Sequence[int]) -> Fit | None:
        gpus = _devices(free)
        split = budget_split(gpus, self.settings, self.margin_bytes)
        result = self._estimate(replace(self.settings, tensor_split=split), gpus)
        if not result.fits(self.margin_bytes):
            return None
        return Fit(_gpu_totals(result), result.cpu.total + self.host_extra_bytes, -1, split)

    def partial(self, free: Sequence[int], host_free: int) -> Fit | None:
        if not self._splittable(free):
            return None
        if len(free) == 1:
            fit = self._partial_one(free[0])
        else:
            fit = self._remember(("partial", tuple(free)), lambda: self._partial_several(free))
        return fit if fit is not None and fit.host_bytes <= host_free else None

    def _partial_one(self, free: int) -> Fit | None:
        def ok(n_gpu_layers: int) -> bool:
            return self._on_one(n_gpu_layers)[0] + self.margin_bytes <= free

        found = largest(0, self.shape.n_layer + 1, ok)
        if not found:
            return None
        gpu, host = self._on_one(found)
        return Fit((gpu,), host, found)

    def _partial_several(self, free: Sequence[int]) -> Fit | None:
        plan = max_gpu_layers(self.shape, self.settings, _devices(free), self.margin_bytes)
        if not plan.fits or plan.n_gpu_layers == 0:
            return None
        found = replace(
            self.settings, n_gpu_layers=plan.n_gpu_layers, tensor_split=plan.tensor_split
        )
        result = self._learn(plan.estimate, found)
        if not result.fits(self.margin_bytes):
            return None  # what was learned does not fit: refused rather than under-promised
        host = result.cpu.total + self.host_extra_bytes
        return Fit(_gpu_totals(result), host, plan.n_gpu_layers, plan.tensor_split)

    def cpu_only(self, host_free: int) -> Fit | None:
        if self._cpu is None:
            cpu = self._estimate(replace(self.settings, n_gpu_layers=0), ()).cpu.total
            self._cpu = cpu + self.host_extra_bytes
        return Fit((), self._cpu, 0, None) if self._cpu <= host_free else None
