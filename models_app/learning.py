"""Memory learned from running instances: measured figures that correct later estimates.

When an instance reaches running, the buffers llama.cpp logged (weights, KV cache,
compute, output per device) are stored with the model file, the settings and the kind
of device (``MemoryMeasurement``); while it runs, NVML's per-process figure of each GPU
is kept too (the highest seen). A later estimate for the same file learns from them:

- **exact reuse**: same file, same settings (as they decide memory: the resolved
  context, batches, cache types, flash attention, layers per device …:
  ``settings_key``) and a device kind in question → each buffer is the measured one
  (plus the log's precision), lower than computed too: llama.cpp allocates these
  buffers once at load and never grows them, so for these settings the measurement is
  the truth and a higher computed figure an over-estimate.
- **correction**: same file, other settings → each component the estimator
  under-counted for a measured run (measured above computed by more than the log's
  precision, GPUs and host apart) is scaled by measured ÷ computed, the computed
  figure being the estimator's for the measured settings, worked out again now. Only
  upwards: an over-estimate measured under other settings does not prove one under
  these, and a learned figure must never under-promise (an OOM at placement margins).
  The same ratio gives the weights' exact offset when the layers lie alike.
- **GPU overhead** (CUDA context, cuBLAS, pools: in no log): NVML's peak for the
  backend's process less its buffers, when above the computed overhead; never lower:
  a reading is one moment and the pools grow under load.

Where several measurements apply, the largest figure wins. Figures learned say so
(``Figure``): "learned from instance #1a2b3c4d on 2026-12-02, NVIDIA L4".
Bad or missing stored data is skipped: an estimate never fails because of learning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from uuid import UUID

from django.utils import timezone

from core.units import MIB
from models_app.estimator import (
    CacheType,
    DeviceEstimate,
    Estimate,
    Explanation,
    GpuDevice,
    HostProfile,
    ModelShape,
    RunSettings,
    SplitMode,
    estimate,
    format_bytes,
    prepare,
)
from models_app.gguf import ModelFacts
from models_app.models import CatalogModel, MemoryMeasurement

logger = logging.getLogger("gpufleet.learning")

CPU_KIND = "cpu"
LEARNED = ("weights", "kv_cache", "compute", "output")
LABELS = {
    "weights": "weights",
    "kv_cache": "KV cache",
    "compute": "compute",
    "output": "output",
    "overhead": "overhead",
}
LOG_PRECISION = MIB // 100 + 1  # llama.cpp logs sizes as %.2f MiB
MAX_OBSERVATIONS = 8  # the latest measurements of one file read (an estimate each)
UNLIMITED = 1 << 60  # free bytes of a GPU when estimating a measured layout again
# Settings the key takes from the estimate instead (resolved: the context, the layers).
_RESOLVED = (
    "n_ctx", "n_seq_max", "n_batch", "n_ubatch", "n_outputs_max", "n_gpu_layers",
    "tensor_split", "main_gpu", "gpu_overhead_bytes",
)  # fmt: skip


def fingerprint(facts: ModelFacts) -> str:
    """The file's identity for memory: its tensors (name, type, shape) and its
    hyperparameters, not its name or location (``general.*``), so that a copy on any
    node, the catalog's facts and a header read from the hub give the same key."""
    data = facts.to_dict()
    payload = {
        "architecture": data["architecture"],
        "tensors": [[t["name"], t["ggml_type"], t["shape"]] for t in data["tensors"]],
        "metadata": {k: v for k, v in data["metadata"].items() if not k.startswith("general.")},
    }
    return _digest(payload)


def _digest(payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def settings_data(settings: RunSettings) -> dict[str, Any]:
    """``RunSettings`` as JSON-ready data (``settings_from`` reads it back)."""
    data = {f.name: getattr(settings, f.name) for f in fields(RunSettings) if f.name != "host"}
    for name in ("type_k", "type_v", "split_mode"):
        data[name] = str(data[name])
    data["tensor_split"] = list(settings.tensor_split) if settings.tensor_split else None
    data["host_repack"] = sorted(settings.host.repack_types)
    return data


def settings_from(data: Mapping[str, Any]) -> RunSettings:
    values = {f.name: data[f.name] for f in fields(RunSettings) if f.name in data}
    values["type_k"] = CacheType(values.get("type_k", CacheType.F16))
    values["type_v"] = CacheType(values.get("type_v", CacheType.F16))
    values["split_mode"] = SplitMode(values.get("split_mode", SplitMode.LAYER))
    split = values.get("tensor_split")
    values["tensor_split"] = tuple(float(part) for part in split) if split else None
    if "host_repack" in data:
        values["host"] = HostProfile(frozenset(str(name) for name in data["host_repack"]))
    return RunSettings(**values)


def settings_key(settings: RunSettings, result: Estimate) -> str:
    """The settings as they decide memory, with ``result`` (their estimate) resolving
    the context (``n_ctx`` 0, padding, batches capped by it) and where the layers lie
    (``n_gpu_layers`` -1 or n_layer + 1, the split): equal keys, equal buffers."""
    identity = {k: v for k, v in settings_data(settings).items() if k not in _RESOLVED}
    identity["context"] = asdict(result.context)
    identity["layers"] = {name: list(ids) for name, ids in result.assignment.by_device.items()}
    identity["output_device"] = result.assignment.output_device
    identity["devices"] = [device.device for device in result.devices]
    return _digest(identity)


def device_kind(gpu_names: Sequence[str]) -> str:
    """ "cpu" without GPUs, else the GPUs' product name (mixed ones joined)."""
    return " + ".join(sorted(set(gpu_names))) if gpu_names else CPU_KIND


def _gpu_order(name: str) -> int:
    digits = re.sub(r"\D", "", name)
    return int(digits) if digits else 0


def measured_devices(buffers: Mapping[str, Any]) -> list[GpuDevice]:
    """The GPUs of a measured layout, in llama.cpp's order, as big as need be."""
    names = sorted((name for name in buffers if name != "CPU"), key=_gpu_order)
    return [GpuDevice(name, UNLIMITED) for name in names]


@dataclass(frozen=True, slots=True)
class Observation:
    """One stored measurement as plain data."""

    settings: RunSettings
    settings_key: str
    kind: str
    buffers: dict[str, dict[str, int]]
    nvml: dict[str, int]
    source: str  # "instance #1a2b3c4d on 2026-12-02, NVIDIA L4"
    # file, settings and buffers in one digest: what its correction factors depend on
    # ("": not cached)
    cache_key: str = ""

    @property
    def on_gpus(self) -> bool:
        return self.kind != CPU_KIND

    @property
    def devices(self) -> frozenset[str]:
        return frozenset(self.buffers)

    def overhead(self) -> int:
        """The most NVML saw a GPU's process use beyond the buffers logged for it."""
        beyond = [
            used - sum(self.buffers.get(device, {}).values()) for device, used in self.nvml.items()
        ]
        return max([0, *beyond])


def _source(row: MemoryMeasurement) -> str:
    who = f"instance #{str(row.instance_id)[:8]}" if row.instance_id else "an instance"
    kind = "CPU" if row.device_kind == CPU_KIND else row.device_kind
    return f"{who} on {timezone.localtime(row.measured_at):%Y-%m-%d}, {kind}"


def _observation(row: MemoryMeasurement) -> Observation | None:
    try:
        buffers = {
            str(device): {name: int(parts[name]) for name in LEARNED}
            for device, parts in row.buffers.items()
        }
        nvml = {str(device): int(used) for device, used in (row.nvml or {}).items()}
        settings = settings_from(row.settings)
    except (AttributeError, KeyError, TypeError, ValueError):
        logger.warning("memory measurement %s is unreadable: skipped", row.pk)
        return None
    if not buffers or any(v < 0 for parts in buffers.values() for v in parts.values()):
        return None
    cache_key = _digest([row.model_key, row.settings_key, buffers])
    return Observation(
        settings, row.settings_key, row.device_kind, buffers, nvml, _source(row), cache_key
    )


@dataclass(frozen=True, slots=True)
class Figure:
    """A figure of an estimate that was learned rather than computed."""

    device: str
    component: str
    computed: int
    value: int
    how: str  # "measured", "corrected ×1.12", "NVML per process"
    source: str

    @property
    def label(self) -> str:
        return LABELS.get(self.component, self.component)

    @property
    def text(self) -> str:
        return f"learned from {self.source} ({self.how}; computed {format_bytes(self.computed)})"

    def __str__(self) -> str:
        return f"{self.device} {self.label} {format_bytes(self.value)}: {self.text}"

    def to_dict(self) -> dict[str, object]:
        return {
            "device": self.device,
            "component": self.component,
            "computed": self.computed,
            "value": self.value,
            "how": self.how,
            "source": self.source,
            "text": str(self),
        }


@dataclass(frozen=True, slots=True)
class Factor:
    """A component the estimator under-counted on one side (GPUs or host) of a run."""

    ratio: float
    source: str


class Learning:
    """What the measurements of one model file teach its estimates (rules: module doc).

    ``observations`` are those of the device kinds in question; the correction factors
    are worked out here, once (one estimate per measurement)."""

    def __init__(self, observations: Sequence[Observation], shape: ModelShape | None) -> None:
        self.observations = tuple(observations)
        self.factors: dict[tuple[bool, bool, str], Factor] = {}
        for observation in self.observations:
            if shape is not None:
                self._add_factors(observation, shape)

    def __bool__(self) -> bool:
        return bool(self.observations)

    def _add_factors(self, observation: Observation, shape: ModelShape) -> None:
        for key, ratio in _ratios(observation, shape):
            self._keep(key, ratio, observation)

    def _keep(self, key: tuple[bool, bool, str], ratio: float, observation: Observation) -> None:
        known = self.factors.get(key)
        if known is None or ratio > known.ratio:
            self.factors[key] = Factor(ratio, observation.source)

    def apply(self, result: Estimate, settings: RunSettings) -> tuple[Estimate, tuple[Figure, ...]]:
        """``result`` (the estimate for ``settings``) with the learned figures in place,
        and those figures (none: ``result`` itself)."""
        on_gpus = any(device.is_gpu for device in result.devices)
        pool = [o for o in self.observations if o.on_gpus == on_gpus]
        if not pool:
            return result, ()
        key, names = settings_key(settings, result), {d.device for d in result.devices}
        exact = [o for o in pool if o.settings_key == key and o.devices == names]
        figures: list[Figure] = []
        devices = tuple(self._device(d, exact, pool, on_gpus, figures) for d in result.devices)
        if not figures:
            return result, ()
        lines = tuple(Explanation(f.device, f.component, f.value, f.text) for f in figures)
        return replace(result, devices=devices, explanation=result.explanation + lines), tuple(
            figures
        )

    def _device(
        self,
        device: DeviceEstimate,
        exact: Sequence[Observation],
        pool: Sequence[Observation],
        on_gpus: bool,
        figures: list[Figure],
    ) -> DeviceEstimate:
        changes: dict[str, int] = {}
        for component in LEARNED:
            computed = device.component(component)
            figure = (
                _exact(device.device, component, computed, exact)
                if exact
                else self._corrected(device, component, computed, on_gpus)
            )
            if figure is not None:
                changes[component] = figure.value
                figures.append(figure)
        overhead = _overhead(device, exact or pool) if device.is_gpu else None
        if overhead is not None:
            changes["overhead"] = overhead.value
            figures.append(overhead)
        return replace(device, **changes) if changes else device  # type: ignore[arg-type]

    def _corrected(
        self, device: DeviceEstimate, component: str, computed: int, on_gpus: bool
    ) -> Figure | None:
        factor = self.factors.get((on_gpus, device.is_gpu, component))
        if factor is None or computed <= 0:
            return None
        value = math.ceil(computed * factor.ratio)
        how = f"corrected ×{factor.ratio:.2f}"
        return Figure(device.device, component, computed, value, how, factor.source)

    def notes(self, settings: RunSettings) -> list[str]:
        """One line per measurement that teaches estimates with ``settings`` (whatever
        the layers' layout): the deployment page's and the dry run's."""
        same = _without_layout(settings)
        lines = [
            f"measured by {o.source} with these settings"
            for o in self.observations
            if _without_layout(o.settings) == same
        ]
        for (_, on_gpu, component), factor in sorted(self.factors.items()):
            side = "GPUs" if on_gpu else "host"
            lines.append(
                f"{LABELS[component]} on {side} ×{factor.ratio:.2f} learned from {factor.source}"
            )
        return [f"memory learned: {line}" for line in dict.fromkeys(lines)]


def _without_layout(settings: RunSettings) -> dict[str, Any]:
    data = settings_data(settings)
    for name in ("n_gpu_layers", "tensor_split", "main_gpu", "gpu_overhead_bytes"):
        data.pop(name)
    return data


def _exact(
    device: str, component: str, computed: int, exact: Sequence[Observation]
) -> Figure | None:
    found = max(
        ((o.buffers[device][component], o.source) for o in exact if device in o.buffers),
        default=None,
    )
    if found is None or abs(found[0] - computed) <= LOG_PRECISION:
        return None  # measured as computed (within the log's precision)
    value = found[0] + LOG_PRECISION if found[0] else 0
    return Figure(device, component, computed, value, "measured", found[1])


def _overhead(device: DeviceEstimate, observations: Sequence[Observation]) -> Figure | None:
    found = max(((o.overhead(), o.source) for o in observations if o.nvml), default=None)
    if found is None or found[0] <= device.overhead:
        return None
    return Figure(
        device.device, "overhead", device.overhead, found[0], "NVML per process", found[1]
    )


Ratios = list[tuple[tuple[bool, bool, str], float]]
# Correction ratios by observation: each takes an estimate, and placement passes load the
# same measurements again and again. Least recently used dropped first.
_RATIOS: OrderedDict[str, Ratios] = OrderedDict()
_RATIOS_LOCK = threading.Lock()
RATIOS_KEPT = 512


def _ratios(observation: Observation, shape: ModelShape) -> Ratios:
    """``((on_gpus, gpu side, component), measured / computed)`` where the estimator
    under-counted what ``observation`` measured; computed once per measurement."""
    key = observation.cache_key
    with _RATIOS_LOCK:
        if key and key in _RATIOS:
            _RATIOS.move_to_end(key)
            return _RATIOS[key]
    ratios = _compute_ratios(observation, shape)
    if key:
        with _RATIOS_LOCK:
            _RATIOS[key] = ratios
            while len(_RATIOS) > RATIOS_KEPT:
                _RATIOS.popitem(last=False)
    return ratios


def _compute_ratios(observation: Observation, shape: ModelShape) -> Ratios:
    try:
        gpus = measured_devices(observation.buffers)
        computed = estimate(shape, observation.settings, gpus)
    except Exception:  # a measurement the estimator cannot redo teaches no correction
        logger.warning("cannot estimate a measured run again (%s)", observation.source)
        return []
    ratios: Ratios = []
    for on_gpu in (True, False):
        counted = [d for d in computed.devices if d.is_gpu == on_gpu]
        for component in LEARNED:
            measured = sum(
                parts[component]
                for device, parts in observation.buffers.items()
                if (device != "CPU") == on_gpu
            )
            total = sum(device.component(component) for device in counted)
            if total > 0 and measured > total + LOG_PRECISION * max(len(counted), 1):
                ratios.append(((observation.on_gpus, on_gpu, component), measured / total))
    return ratios


NO_LEARNING = Learning((), None)


def load(
    facts: ModelFacts, shape: ModelShape | None = None, kinds: Collection[str] | None = None
) -> Learning:
    """The learning for a model file: its CPU measurements, and its GPU ones of
    ``kinds`` (None: of any kind). Never raises: a failure learns nothing."""
    try:
        shape = shape if shape is not None else prepare(facts)
        rows = MemoryMeasurement.objects.filter(model_key=fingerprint(facts))
        observations = [o for row in rows[:MAX_OBSERVATIONS] if (o := _observation(row))]
        wanted = [o for o in observations if not o.on_gpus or kinds is None or o.kind in kinds]
        return Learning(wanted, shape) if wanted else NO_LEARNING
    except Exception:
        logger.exception("reading the memory measurements failed: estimating without them")
        return NO_LEARNING


def record(
    facts: ModelFacts,
    settings: RunSettings,
    kind: str,
    buffers: Mapping[str, Mapping[str, int]],
    *,
    instance_id: UUID | str | None = None,
    model: CatalogModel | None = None,
) -> MemoryMeasurement | None:
    """Store what a run measured (device → component → bytes, from its log), replacing
    the buffers of an earlier measurement of the same file, settings and kind (its NVML
    peak is kept: the highest any such run reached). A measurement that does not match
    the run's layout or lacks a part a load logs is not stored (None)."""
    measured = {str(d): {c: int(parts.get(c, 0)) for c in LEARNED} for d, parts in buffers.items()}
    computed = estimate(prepare(facts), settings, measured_devices(measured))
    if not _complete(measured, computed):
        return None
    row, _ = MemoryMeasurement.objects.update_or_create(
        model_key=fingerprint(facts),
        settings_key=settings_key(settings, computed),
        device_kind=kind,
        defaults={
            "settings": settings_data(settings),
            "buffers": measured,
            "model": model,
            "instance_id": instance_id,
            "measured_at": timezone.now(),
        },
    )
    return row


def _complete(measured: Mapping[str, Mapping[str, int]], computed: Estimate) -> bool:
    """The log names the devices of the layout and every part a load allocates."""
    if set(measured) != {device.device for device in computed.devices}:
        return False
    totals = {c: sum(parts[c] for parts in measured.values()) for c in LEARNED}
    if any(value < 0 for parts in measured.values() for value in parts.values()):
        return False
    kv_expected = any(device.kv_cache for device in computed.devices)
    return (
        totals["weights"] > 0
        and totals["compute"] > 0
        and (totals["kv_cache"] > 0 or not kv_expected)
    )


def record_nvml(measurement_id: int, used: Mapping[str, int]) -> bool:
    """Keep the highest NVML per-process figure per GPU of a measurement (the one an
    instance's run recorded, even once a later instance with its keys took it over);
    True when one rose."""
    row = MemoryMeasurement.objects.filter(pk=measurement_id).first()
    if row is None:
        return False
    nvml = {str(k): int(v) for k, v in (row.nvml or {}).items()}
    risen = {d: int(v) for d, v in used.items() if d in row.buffers and v > nvml.get(d, 0)}
    if not risen:
        return False
    MemoryMeasurement.objects.filter(pk=row.pk).update(nvml=nvml | risen)
    return True
