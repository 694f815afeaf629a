"""``POST /api/v1/estimate``: memory per device for a model and settings, and the plans."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from ninja import Field, Router, Schema
from ninja.errors import HttpError
from ninja.errors import ValidationError as InputError
from pydantic import ConfigDict, Strict, field_validator

from core.access import require_operator
from core.requests import ApiRequest
from inventory.models import Gpu
from models_app import estimate_service
from models_app.estimator import DEFAULT_GPU_OVERHEAD_BYTES, CacheType, SplitMode
from models_app.forms import TENSOR_SPLIT_MAX

router = Router()

Count = Annotated[int, Strict(), Field(ge=1, le=1 << 20)]
Bytes = Annotated[int, Strict(), Field(ge=0, le=1 << 50)]


class SettingsIn(Schema):
    """llama.cpp's settings that change memory use (llama-server flag in brackets)."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: Annotated[int, Strict(), Field(ge=0, le=1 << 24)] = Field(
        4096, description="context size in tokens, all slots together; 0: training context [-c]"
    )
    n_parallel: Annotated[int, Strict(), Field(ge=1, le=1024)] = Field(
        1, description="parallel slots [-np]"
    )
    n_batch: Count = Field(2048, description="logical batch [-b]")
    n_ubatch: Count = Field(512, description="physical batch [-ub]")
    cache_type_k: CacheType = Field(CacheType.F16, description="[-ctk]")
    cache_type_v: CacheType = Field(CacheType.F16, description="[-ctv]; quantized needs flash_attn")
    flash_attn: Annotated[bool, Strict()] = Field(False, description="[-fa]")
    n_gpu_layers: Annotated[int, Strict(), Field(ge=-1, le=100_000)] = Field(
        -1, description="layers on GPUs; -1: all and the output layer [-ngl]"
    )
    split_mode: SplitMode = Field(SplitMode.LAYER, description="[-sm]")
    tensor_split: (
        list[Annotated[float, Strict(), Field(ge=0, le=TENSOR_SPLIT_MAX, allow_inf_nan=False)]]
        | None
    ) = Field(
        None,
        max_length=64,
        description="share per GPU, in device order; null: by free memory [-ts]",
    )
    main_gpu: Annotated[int, Strict(), Field(ge=0, le=64)] = Field(0, description="[-mg]")
    mmap: Annotated[bool, Strict()] = Field(True, description="false: --no-mmap")
    kv_offload: Annotated[bool, Strict()] = Field(True, description="false: --no-kv-offload")
    gpu_overhead_bytes: Bytes = Field(
        DEFAULT_GPU_OVERHEAD_BYTES, description="CUDA context and driver memory per GPU"
    )


class DeviceIn(Schema):
    model_config = ConfigDict(extra="forbid")

    free_bytes: Annotated[int, Strict(), Field(ge=1, le=1 << 50)] = Field(
        description="free memory of a GPU that is not in the inventory (what-if planning)"
    )


class EstimateIn(Schema):
    """One model source (``path`` inside a storage root, ``url``, or ``hf_repo`` + ``hf_file``),
    run settings, and the GPUs: inventory GPUs of one node by id, and/or hypothetical ones."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field("", max_length=4096)
    url: str = Field("", max_length=4096)
    hf_repo: str = Field("", max_length=200, description="e.g. Qwen/Qwen2.5-7B-Instruct-GGUF")
    hf_file: str = Field("", max_length=500)
    revision: str = Field("main", min_length=1, max_length=200)
    settings: SettingsIn | None = Field(None, description="null or left out: the defaults")
    gpus: list[UUID] = Field(default_factory=list, max_length=64)
    devices: list[DeviceIn] = Field(default_factory=list, max_length=64)
    margin_bytes: Bytes = Field(0, description="kept free on each GPU by the plans")

    @field_validator("path", "url", "hf_repo", "hf_file", "revision")
    @classmethod
    def no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("May not contain a NUL character.")
        return value


class DeviceOut(Schema):
    device: str = Field(description="llama.cpp's name: CUDA0, CUDA1 …, CPU")
    label: str = Field(description="node/gpuN for inventory GPUs")
    is_gpu: bool
    weights: int
    kv_cache: int
    compute: int
    output: int
    overhead: int
    total: int
    free_bytes: int | None = Field(description="what placement may use on this GPU")
    fits: bool
    layers: str = Field(description="repeating layers placed here, as ranges")
    buffers: dict[str, int] = Field(description="llama.cpp's buffer names and sizes")
    learned: dict[str, str] = Field(
        default_factory=dict,
        description="components learned from a measurement rather than computed, and from "
        "which (plans: always computed)",
    )


class PlanOut(Schema):
    fits: bool
    n_gpu_layers: int
    n_ctx: int
    tensor_split: list[float] | None
    devices: list[DeviceOut]


class ModelOut(Schema):
    architecture: str
    name: str | None
    file_type: str | None
    parameter_count: int
    n_layer: int | None
    context_length: int | None
    size_bytes: int
    shards: int


class LearnedOut(Schema):
    device: str
    component: str = Field(description="weights, kv_cache, compute, output or overhead")
    computed: int = Field(description="the estimator's figure")
    value: int = Field(description="the figure used: learned")
    how: str = Field(description='"measured", "corrected ×1.12" or "NVML per process"')
    source: str = Field(description='e.g. "instance #1a2b3c4d on 2026-12-02, NVIDIA L4"')
    text: str


class EstimateOut(Schema):
    source: str
    model: ModelOut
    n_ctx: int = Field(description="context cells after llama.cpp's padding")
    devices: list[DeviceOut]
    total: int
    gpu_total: int
    fits: bool
    approximate: bool = Field(description="true when the architecture is not modelled exactly")
    reasons: list[str]
    caveats: list[str]
    explanation: list[str]
    learned: list[LearnedOut] = Field(
        default_factory=list,
        description="figures learned from running instances' measurements rather than computed",
    )
    computed_total: int = Field(description="the total before learning")
    layers_plan: PlanOut | None = Field(description="the most GPU layers that fit")
    context_plan: PlanOut | None = Field(description="the longest context that fits")
    margin_bytes: int


class ErrorOut(Schema):
    detail: str


def _targets(payload: EstimateIn) -> list[estimate_service.Target]:
    gpus = list(Gpu.objects.select_related("node").filter(pk__in=payload.gpus))
    missing = set(payload.gpus) - {gpu.pk for gpu in gpus}
    if missing:
        raise HttpError(404, f"GPU {sorted(missing)[0]} not found.")
    targets = estimate_service.inventory_targets(gpus)
    sizes = [device.free_bytes for device in payload.devices]
    return targets + estimate_service.hypothetical_targets(sizes, first=len(targets))


def _settings(values: SettingsIn) -> Any:
    return estimate_service.build_settings(
        n_ctx=values.n_ctx,
        n_seq_max=values.n_parallel,
        n_batch=values.n_batch,
        n_ubatch=values.n_ubatch,
        type_k=values.cache_type_k,
        type_v=values.cache_type_v,
        flash_attn=values.flash_attn,
        n_gpu_layers=values.n_gpu_layers,
        split_mode=values.split_mode,
        tensor_split=tuple(values.tensor_split) if values.tensor_split is not None else None,
        main_gpu=values.main_gpu,
        use_mmap=values.mmap,
        offload_kqv=values.kv_offload,
        gpu_overhead_bytes=values.gpu_overhead_bytes,
    )


@router.post(
    "/estimate",
    response={200: EstimateOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    tags=["estimate"],
    summary="Memory a model needs per device, and the most layers and context that fit",
    description=(
        "Reads only the GGUF header (remote files through HTTP Range requests) and follows "
        "llama.cpp's placement and allocation rules. Reading a URL or the Hugging Face hub "
        "is for operators. Without GPUs everything is placed on the CPU."
    ),
)
def estimate(request: ApiRequest, payload: EstimateIn) -> dict[str, object]:
    source = estimate_service.ModelSource(
        payload.path, payload.url, payload.hf_repo, payload.hf_file, payload.revision
    )
    try:
        source.check()
        if source.remote:
            require_operator(request.auth, "estimate from a URL or the Hugging Face hub")
        targets = _targets(payload)
        settings = _settings(payload.settings or SettingsIn.model_validate({}))
        report = estimate_service.run(source, settings, targets, payload.margin_bytes)
    except estimate_service.EstimateInputError as error:
        problem = {"loc": ("body", "payload", error.field), "msg": error.message}
        raise InputError([problem]) from error
    return estimate_service.report_data(report)
