"""Estimates for people: where the model comes from, which GPUs, and the plan.

The estimator (``models_app.estimator``) works on plain data. This module turns what
an operator gives (a file in a storage root, an http(s) URL, or a Hugging Face repo
and file; GPUs of the inventory or hypothetical ones) into that data, runs the
estimate and the inverse planner, and is shared by the API and the estimate page.

Headers read from a source are cached for a while, so that a page re-estimating on
every change of a setting reads a remote header once, not on every keystroke.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from django.conf import settings
from huggingface_hub import get_token, hf_hub_url
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from inventory.devices import device_order, selection_problems
from inventory.models import Gpu
from models_app import learning
from models_app.estimator import (
    COMPONENTS,
    Estimate,
    EstimatorError,
    GpuDevice,
    ModelShape,
    Plan,
    RunSettings,
    estimate,
    max_context,
    max_gpu_layers,
    prepare,
)
from models_app.estimator.explain import ranges
from models_app.fetch_guard import FetchRefused, check_url
from models_app.gguf import GGUFError, ModelFacts, load_model_facts, shard_locations
from models_app.transfer import UnsafePath, resolve_inside_any
from models_app.transfer.sources import hub_endpoint

logger = logging.getLogger("gpufleet.estimating")
FACTS_CACHE_SIZE = 32
REMOTE_FACTS_TTL = 600.0  # seconds a remote header is trusted before it is read again


class EstimateInputError(ValueError):
    """Input that cannot be estimated; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Exactly one of: ``path`` (inside a storage root), ``url``, or ``hf_repo`` + ``hf_file``."""

    path: str = ""
    url: str = ""
    hf_repo: str = ""
    hf_file: str = ""
    revision: str = "main"

    @property
    def remote(self) -> bool:
        return bool(self.url or self.hf_repo)

    def check(self) -> None:
        given = [name for name in ("path", "url", "hf_repo") if getattr(self, name)]
        if len(given) != 1:
            raise EstimateInputError(
                "source", "Give exactly one model source: a path, a URL, or a Hugging Face repo."
            )
        if self.url and not self.url.lower().startswith(("http://", "https://")):
            raise EstimateInputError("url", "Only http:// and https:// URLs can be read.")
        if self.hf_repo:
            self._check_hf()

    def _check_hf(self) -> None:
        try:
            validate_repo_id(self.hf_repo)
        except HFValidationError as error:
            raise EstimateInputError("hf_repo", f"Not a valid repo id: {error}") from error
        if not self.hf_file.lower().endswith(".gguf") or ".." in self.hf_file.split("/"):
            raise EstimateInputError("hf_file", "Name a .gguf file of the repo.")

    def location(self) -> str:
        """The path or URL to read the header from."""
        self.check()
        if self.path:
            return str(inside_storage_root(self.path))
        if self.url:
            return self.url
        endpoint = hub_endpoint()
        return hf_hub_url(self.hf_repo, self.hf_file, revision=self.revision, endpoint=endpoint)

    def label(self) -> str:
        if self.hf_repo:
            return f"{self.hf_repo}/{self.hf_file}@{self.revision}"
        return self.path or self.url


HF_PREFIX = "hf://"
_HF_WEB = re.compile(
    r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/(?:blob|resolve)/(?P<rev>[^/]+)/(?P<file>.+)$"
)


def parse_reference(text: str) -> ModelSource:
    """One text field for the page: a path in a storage root, an http(s) URL, or a hub
    file as ``hf://owner/repo[@revision]/file.gguf`` (huggingface_hub's file-system
    form). A huggingface.co ``/blob/`` or ``/resolve/`` page URL is read as the hub file."""
    text = text.strip()
    if not text:
        raise EstimateInputError(
            "model", "Name a model: a path, a URL, or hf://owner/repo/file.gguf."
        )
    web = _HF_WEB.match(text)
    if web:
        return ModelSource(hf_repo=web["repo"], hf_file=web["file"], revision=web["rev"])
    if text.lower().startswith(HF_PREFIX):
        return _parse_hf(text[len(HF_PREFIX) :])
    if text.lower().startswith(("http://", "https://")):
        return ModelSource(url=text)
    return ModelSource(path=text)


def _parse_hf(rest: str) -> ModelSource:
    parts = rest.split("/", 2)
    if len(parts) < 3 or not parts[2]:
        raise EstimateInputError("model", "A hub file reads hf://owner/repo[@revision]/file.gguf.")
    name, _, revision = parts[1].partition("@")
    return ModelSource(
        hf_repo=f"{parts[0]}/{name}", hf_file=parts[2], revision=unquote(revision) or "main"
    )


def local_models(limit: int = 200) -> list[str]:
    """GGUF files in the storage roots (first shards only), for the page to offer."""
    found: list[str] = []
    for root in settings.GPUFLEET_STORAGE_ROOTS:
        for path in sorted(Path(root).rglob("*.gguf")) if Path(root).is_dir() else []:
            if shard_locations(path)[0] != str(path):  # a later shard of a split model
                continue
            found.append(str(path))
            if len(found) >= limit:
                return found
    return found


def inside_storage_root(path: str) -> Path:
    """``path`` resolved (symlinks too), refused unless it is a file inside a storage root.
    The same guard as a download's destination (``transfer.resolve_inside_any``): a
    relative path is taken in the first root, ``..`` is refused outright."""
    try:
        resolved = resolve_inside_any(settings.GPUFLEET_STORAGE_ROOTS, path)
    except UnsafePath:
        shown = ", ".join(str(Path(root).resolve()) for root in settings.GPUFLEET_STORAGE_ROOTS)
        raise EstimateInputError(
            "path", f"The file must lie inside a storage root ({shown}), without '..'."
        ) from None
    if not resolved.is_file():
        raise EstimateInputError("path", f"No such file: {resolved}")
    return resolved


class _FactsCache:
    """A small LRU of parsed headers; local entries keyed by size and mtime."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[tuple[object, ...], tuple[float, ModelFacts]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...], max_age: float | None) -> ModelFacts | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or (max_age is not None and time.monotonic() - hit[0] > max_age):
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: tuple[object, ...], facts: ModelFacts) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), facts)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


FACTS_CACHE = _FactsCache(FACTS_CACHE_SIZE)


def load_facts(source: ModelSource, *, size: int | None = None) -> ModelFacts:
    """The model's facts from its header(s), read (or remembered) from the source
    (``size``: the remote file's, when known, so no read asks past its end)."""
    location = source.location()
    field = "path" if source.path else "url" if source.url else "hf_file"
    if source.remote:
        _check_fetch(location, field)
    key: tuple[object, ...] = (location,)
    if not source.remote:
        stat = Path(location).stat()
        key = (location, stat.st_size, stat.st_mtime_ns)
    facts = FACTS_CACHE.get(key, REMOTE_FACTS_TTL if source.remote else None)
    if facts is not None:
        return facts
    headers = _auth_headers(source)
    try:
        # A local file may still be downloading: its header is all an estimate needs.
        facts = load_model_facts(
            location, partial=not source.remote, http_headers=headers, size=size
        )
    except FetchRefused as error:  # a redirect to an address that is not fetched from
        raise EstimateInputError(field, error.message) from error
    except GGUFError as error:
        raise EstimateInputError(field, f"Cannot read the model's header: {error}") from error
    FACTS_CACHE.put(key, facts)
    return facts


def _check_fetch(location: str, field: str) -> None:
    """Refuse a URL whose host is not public (unless allowed) before any request."""
    try:
        check_url(location)
    except FetchRefused as error:
        raise EstimateInputError(field, error.message) from error


def _auth_headers(source: ModelSource) -> dict[str, str] | None:
    token = get_token() if source.hf_repo else None
    return {"Authorization": f"Bearer {token}"} if token else None


@dataclass(frozen=True, slots=True)
class Target:
    """A GPU to estimate for: llama.cpp's device (``CUDA0``) and what the operator calls it."""

    device: GpuDevice
    label: str
    gpu: Gpu | None = None


def inventory_targets(gpus: Sequence[Gpu]) -> list[Target]:
    """GPUs of one node in the order a backend would see them, sized by what placement may
    use (``Gpu.free_for_placement``). Disabled or missing GPUs and several nodes are refused."""
    problems = selection_problems(gpus)
    if problems:
        raise EstimateInputError("gpus", "; ".join(problems))
    return [
        Target(
            GpuDevice(f"CUDA{i}", gpu.free_for_placement), f"{gpu.node.name}/gpu{gpu.index}", gpu
        )
        for i, gpu in enumerate(device_order(gpus))
    ]


def hypothetical_targets(free_bytes: Sequence[int], first: int = 0) -> list[Target]:
    """GPUs that are not in the inventory, by their free memory (what-if planning)."""
    for size in free_bytes:
        if size <= 0:
            raise EstimateInputError("devices", "A GPU's free memory must be positive.")
    return [
        Target(GpuDevice(f"CUDA{first + i}", size), f"GPU {first + i} (hypothetical)")
        for i, size in enumerate(free_bytes)
    ]


@dataclass(frozen=True, slots=True)
class Report:
    """An estimate, and (with GPUs) the most layers and the longest context that fit."""

    source: str
    facts: ModelFacts
    settings: RunSettings
    targets: tuple[Target, ...]
    estimate: Estimate
    layers_plan: Plan | None
    context_plan: Plan | None
    margin_bytes: int
    learned: tuple[learning.Figure, ...] = ()
    computed: Estimate | None = None  # before learning (None: nothing was learned)

    def learned_on(self, device: str) -> dict[str, learning.Figure]:
        """The learned figures of one device, by component."""
        return {f.component: f for f in self.learned if f.device == device}

    def label_of(self, device: str) -> str:
        for target in self.targets:
            if target.device.name == device:
                return target.label
        return "CPU (host)" if device == "CPU" else device


def run(
    source: ModelSource,
    run_settings: RunSettings,
    targets: Sequence[Target] = (),
    margin_bytes: int = 0,
) -> Report:
    """Read the header, estimate for the settings, and plan layers and context."""
    facts = load_facts(source)
    gpus = [target.device for target in targets]
    try:
        shape = prepare(facts)
        computed = estimate(shape, run_settings, gpus)
        layers = max_gpu_layers(shape, run_settings, gpus, margin_bytes) if gpus else None
        context = max_context(shape, run_settings, gpus, margin_bytes) if gpus else None
    except (EstimatorError, ValueError) as error:
        raise EstimateInputError("settings", str(error)) from error
    result, learned = learn(facts, shape, run_settings, targets, computed)
    return Report(
        source.label(), facts, run_settings, tuple(targets), result, layers, context,
        margin_bytes, learned, computed if learned else None,
    )  # fmt: skip


def target_kinds(targets: Sequence[Target]) -> set[str] | None:
    """The device kind measurements must be of: "cpu" without GPUs, the inventory GPUs'
    product name, any GPU kind when a hypothetical GPU takes part (its kind is unknown)."""
    if any(target.gpu is None for target in targets):
        return None
    return {learning.device_kind([target.gpu.name for target in targets if target.gpu])}


def learn(
    facts: ModelFacts,
    shape: ModelShape,
    run_settings: RunSettings,
    targets: Sequence[Target],
    computed: Estimate,
) -> tuple[Estimate, tuple[learning.Figure, ...]]:
    """``computed`` with what measurements of this file teach (``models_app.learning``)."""
    taught = learning.load(facts, shape, target_kinds(targets))
    try:
        return taught.apply(computed, run_settings) if taught else (computed, ())
    except Exception:  # learning must never cost an estimate
        logger.exception("applying the memory measurements failed: computed figures kept")
        return computed, ()


def context_capped(report: Report) -> bool:
    """Whether the context plan stopped at the search's top (training context x slots)."""
    plan, train = report.context_plan, report.facts.context_length or 0
    return bool(plan and plan.fits and plan.n_ctx >= train * report.settings.n_seq_max)


def build_settings(**values: object) -> RunSettings:
    """``RunSettings`` from parsed input; llama.cpp's own refusals become input errors."""
    try:
        return RunSettings(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise EstimateInputError("settings", str(error)) from error


def device_data(report: Report, result: Estimate, learned: bool = False) -> list[dict[str, object]]:
    """Per device: the components, total, free memory and whether it fits (plain data);
    ``learned``: ``result`` is the report's estimate, so its learned figures are named."""
    rows: list[dict[str, object]] = []
    for device in result.devices:
        figures = report.learned_on(device.device) if learned else {}
        rows.append(
            {
                "device": device.device,
                "label": report.label_of(device.device),
                "is_gpu": device.is_gpu,
                **{name: device.component(name) for name in COMPONENTS},
                "total": device.total,
                "free_bytes": device.free_bytes,
                "fits": device.fits(report.margin_bytes),
                "layers": ranges(device.layers),
                "buffers": dict(device.buffers),
                "learned": {name: figure.text for name, figure in figures.items()},
            }
        )
    return rows


def plan_data(report: Report, plan: Plan | None) -> dict[str, object] | None:
    if plan is None:
        return None
    return {
        "fits": plan.fits,
        "n_gpu_layers": plan.n_gpu_layers,
        "n_ctx": plan.n_ctx,
        "tensor_split": list(plan.tensor_split) if plan.tensor_split else None,
        "devices": device_data(report, plan.estimate),
    }


def model_data(facts: ModelFacts) -> dict[str, object]:
    return {
        "architecture": facts.architecture,
        "name": facts.name,
        "file_type": facts.file_type,
        "parameter_count": facts.parameter_count,
        "n_layer": facts.block_count,
        "context_length": facts.context_length,
        "size_bytes": facts.total_tensor_bytes,
        "shards": len(facts.shards),
    }


def report_data(report: Report) -> dict[str, object]:
    """The whole report as JSON-ready data (the API's answer)."""
    result = report.estimate
    return {
        "source": report.source,
        "model": model_data(report.facts),
        "n_ctx": result.context.n_ctx,
        "devices": device_data(report, result, learned=True),
        "total": result.total,
        "gpu_total": result.gpu_total,
        "fits": result.fits(report.margin_bytes),
        "approximate": result.approximate,
        "reasons": list(result.reasons),
        "caveats": list(result.caveats),
        "explanation": [str(item) for item in result.explanation],
        "learned": [figure.to_dict() for figure in report.learned],
        "computed_total": report.computed.total if report.computed else result.total,
        "layers_plan": plan_data(report, report.layers_plan),
        "context_plan": plan_data(report, report.context_plan),
        "margin_bytes": report.margin_bytes,
    }
