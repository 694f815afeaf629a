"""REST API for the inventory: nodes, GPUs (read, change settings) and GPU telemetry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as InputError
from pydantic import ConfigDict, Strict, field_validator

from core.access import require_operator
from core.requests import ApiRequest
from inventory.actions import NodeNotOffline, do_set_draining, do_update_gpu_settings
from inventory.answers import answers
from inventory.choices import MOVING_AWAY, PRIORITY_MAX, PRIORITY_MIN, NodeStatus, Resolution
from inventory.models import Gpu, GpuSample, Node

SAMPLE_LIMIT = 5000
DEFAULT_WINDOW = timedelta(hours=1)

router = Router()


# --- schemas -----------------------------------------------------------------------------


class GpuOut(Schema):
    id: UUID
    node_id: UUID
    node_name: str
    index: int
    uuid: str = Field(description="NVML UUID (GPU-…)")
    name: str
    memory_total: int = Field(description="bytes")
    memory_used: int = Field(description="bytes, last reading")
    memory_free: int = Field(description="bytes, last reading")
    reserved: int = Field(description="bytes kept free (override or global default)")
    reserved_override: int | None = Field(description="bytes; null means the global default")
    priority: int = Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)
    enabled: bool
    present: bool = Field(description="False once the probe stops seeing it")
    utilization: float = Field(description="percent, last reading")
    temperature: float | None = Field(description="°C, last reading")
    power_draw: float | None = Field(description="watts, last reading")
    power_limit: float = Field(description="watts")
    driver_version: str
    cuda_version: str
    compute_capability: str
    sampled_at: datetime | None
    error: str

    @staticmethod
    def resolve_node_name(obj: Gpu) -> str:
        return obj.node.name


class NodeOut(Schema):
    id: UUID
    name: str
    address: str
    status: NodeStatus
    labels: dict[str, str]
    cpu_count: int
    ram_total: int = Field(description="bytes")
    ram_available: int = Field(description="bytes")
    disk_free: dict[str, int] = Field(description="storage root → bytes free")
    last_heartbeat: datetime | None
    agent_version: str
    probe_message: str
    created_at: datetime
    gpu_count: int = Field(description="GPUs the probe currently sees")


class DrainRowOut(Schema):
    instance_id: UUID
    deployment_id: UUID
    deployment: str = Field(description="served name")
    state: str = Field(description="the instance's state")
    replacement_id: UUID | None
    replacement_state: str | None
    status: str = Field(
        description="moving (replacement placed or starting), stuck (its replacement fits "
        "nowhere: see reason), waiting (not replaced yet)"
    )
    reason: str


class NodeDetailOut(NodeOut):
    gpus: list[GpuOut]
    drain: list[DrainRowOut] = Field(
        description="While draining or in maintenance: the instances still on the node, "
        "each stopped once its replacement elsewhere is running."
    )

    @staticmethod
    def resolve_gpus(obj: Node) -> list[Gpu]:
        return list(obj.gpus.select_related("node"))

    @staticmethod
    def resolve_drain(obj: Node) -> list[dict[str, Any]]:
        return answers.drain_report(obj) if obj.status in MOVING_AWAY else []


StrictPriority = Annotated[int, Strict(), Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
StrictBytes = Annotated[int, Strict(), Field(ge=0)]
StrictFlag = Annotated[bool, Strict()]


class GpuSettingsIn(Schema):
    """Only the fields sent are changed. ``reserved_override: null`` returns to the default."""

    model_config = ConfigDict(extra="forbid")

    priority: StrictPriority | None = Field(
        None, description=f"{PRIORITY_MIN}–{PRIORITY_MAX}; higher comes first in device order"
    )
    enabled: StrictFlag | None = Field(None, description="A disabled GPU gets no new work.")
    reserved_override: StrictBytes | None = Field(
        None, description="bytes kept free, below the GPU's total; null for the global default"
    )

    @field_validator("priority", "enabled")
    @classmethod
    def not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("May not be null.")
        return value


class GpuFilter(Schema):
    node: UUID | None = Field(None, description="Only the GPUs of this node (its id).")


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class SampleQuery(Schema):
    start: datetime | None = Field(
        None, description="ISO 8601, inclusive; default one hour before `end`. Naive = UTC."
    )
    end: datetime | None = Field(None, description="ISO 8601, exclusive; default now.")
    resolution: Resolution | None = Field(
        None,
        description=(
            "Seconds per sample: 1 (raw), 60 or 900 (means). Default: the finest "
            "resolution still kept for `start`."
        ),
    )

    @field_validator("start", "end")
    @classmethod
    def plausible(cls, value: datetime | None) -> datetime | None:
        """Far-off dates overflow the arithmetic on them (the default window, time zones)."""
        if value is not None and not EARLIEST <= aware(value) < LATEST:
            raise ValueError("Must lie between 1970 and 9000.")
        return value


class SampleOut(Schema):
    ts: datetime
    utilization: float = Field(description="percent")
    memory_used: int = Field(description="bytes")
    temperature: float | None = Field(description="°C")
    power_draw: float | None = Field(description="watts")


class SampleSeriesOut(Schema):
    gpu_id: UUID
    resolution: int = Field(description="seconds per sample")
    start: datetime
    end: datetime
    limit: int = Field(description=f"At most {SAMPLE_LIMIT} samples per answer.")
    truncated: bool = Field(description="True when more samples lie in the range.")
    next_start: datetime | None = Field(
        description="When truncated: ask again with this `start` for the next samples."
    )
    samples: list[SampleOut] = Field(description="Oldest first.")


class ErrorOut(Schema):
    detail: str


class FieldErrorOut(Schema):
    field: str
    message: str


class ValidationErrorOut(Schema):
    detail: str
    errors: list[FieldErrorOut]


READ_ERRORS: dict[int | str, Any] = {401: ErrorOut, 404: ErrorOut, 422: ValidationErrorOut}


# --- lookups -----------------------------------------------------------------------------


def nodes_with_counts() -> QuerySet[Node]:
    return Node.objects.annotate(gpu_count=Count("gpus", filter=Q(gpus__present=True)))


def get_node(node_id: UUID) -> Node:
    node = nodes_with_counts().filter(pk=node_id).first()
    if node is None:
        raise HttpError(404, f"Node {node_id} not found.")
    return node


def get_gpu(gpu_id: UUID) -> Gpu:
    gpu = Gpu.objects.select_related("node").filter(pk=gpu_id).first()
    if gpu is None:
        raise HttpError(404, f"GPU {gpu_id} not found.")
    return gpu


# --- nodes -------------------------------------------------------------------------------


@router.get(
    "/nodes", response={200: list[NodeOut], 401: ErrorOut}, tags=["nodes"], summary="List nodes"
)
def list_nodes(request: ApiRequest) -> QuerySet[Node]:
    return nodes_with_counts()


@router.get(
    "/nodes/{node_id}",
    response={200: NodeDetailOut, **READ_ERRORS},
    tags=["nodes"],
    summary="One node with its GPUs",
)
def node_detail(request: ApiRequest, node_id: UUID) -> Node:
    return get_node(node_id)


def _set_draining(request: ApiRequest, node_id: UUID, draining: bool) -> Node:
    require_operator(request.auth, "drain nodes")
    node = get_node(node_id)
    wanted = NodeStatus.DRAINING if draining else NodeStatus.ONLINE
    if node.status != wanted and not do_set_draining(node, draining):
        source = "an online" if draining else "a draining"
        raise HttpError(409, f"Node {node.name} is {node.status}: only {source} node can.")
    return get_node(node_id)


@router.post(
    "/nodes/{node_id}/drain",
    response={200: NodeDetailOut, 403: ErrorOut, 409: ErrorOut, **READ_ERRORS},
    tags=["nodes"],
    summary="Drain a node",
    description="Operators only. No new placements on it; each of its instances is "
    "replaced on another node and stopped once the replacement runs. Instances that fit "
    "nowhere stay (listed in `drain` with the reason). 409 unless online or draining.",
)
def drain_node(request: ApiRequest, node_id: UUID) -> Node:
    return _set_draining(request, node_id, True)


@router.post(
    "/nodes/{node_id}/undrain",
    response={200: NodeDetailOut, 403: ErrorOut, 409: ErrorOut, **READ_ERRORS},
    tags=["nodes"],
    summary="Stop draining a node",
    description="Operators only. The node takes placements again; replacements not yet "
    "running are stopped (its instances serve on). 409 unless draining or online.",
)
def undrain_node(request: ApiRequest, node_id: UUID) -> Node:
    return _set_draining(request, node_id, False)


@router.delete(
    "/nodes/{node_id}",
    response={204: None, 403: ErrorOut, 409: ErrorOut, **READ_ERRORS},
    tags=["nodes"],
    summary="Remove a node for good",
    description="Operators only, and only an offline node (its agent stopped: an agent "
    "that reports again registers its node again). Its GPUs, samples, alerts and copies "
    "go with it; the instances it held are deleted and their deployments create what "
    "they then miss on the other nodes. Drain it first to move them while it still "
    "serves. 409 unless offline.",
)
def remove_node(request: ApiRequest, node_id: UUID) -> Any:
    require_operator(request.auth, "remove nodes")
    node = get_node(node_id)
    try:
        answers.remove_node(node, only_offline=True)
    except NodeNotOffline as error:
        raise HttpError(409, str(error)) from error
    return Status(204, None)


# --- GPUs --------------------------------------------------------------------------------


@router.get(
    "/gpus",
    response={200: list[GpuOut], **READ_ERRORS},
    tags=["gpus"],
    summary="List GPUs, optionally of one node",
)
def list_gpus(request: ApiRequest, filters: Query[GpuFilter]) -> QuerySet[Gpu]:
    gpus = Gpu.objects.select_related("node")
    if filters.node is not None:
        gpus = gpus.filter(node=get_node(filters.node))
    return gpus


@router.get(
    "/gpus/{gpu_id}", response={200: GpuOut, **READ_ERRORS}, tags=["gpus"], summary="One GPU"
)
def gpu_detail(request: ApiRequest, gpu_id: UUID) -> Gpu:
    return get_gpu(gpu_id)


@router.patch(
    "/gpus/{gpu_id}",
    response={200: GpuOut, 400: ErrorOut, 403: ErrorOut, **READ_ERRORS},
    tags=["gpus"],
    summary="Change priority, enabled or reserved memory",
    description="Operators only. Goes through the model's rules; on any error nothing changes.",
)
def update_gpu(request: ApiRequest, gpu_id: UUID, payload: GpuSettingsIn) -> Gpu:
    require_operator(request.auth, "change GPU settings")
    gpu = get_gpu(gpu_id)
    changes = payload.model_dump(exclude_unset=True)
    if not changes:
        return gpu
    return do_update_gpu_settings(gpu, **changes)


# --- telemetry ---------------------------------------------------------------------------


def aware(value: datetime) -> datetime:
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def finest_resolution(start: datetime, now: datetime) -> Resolution:
    """The finest resolution whose retention still reaches back to ``start``."""
    age = (now - start).total_seconds()
    if age <= settings.GPUFLEET_RAW_RETENTION:
        return Resolution.RAW
    if age <= settings.GPUFLEET_MINUTE_RETENTION:
        return Resolution.MINUTE
    return Resolution.QUARTER


def sample_range(query: SampleQuery, now: datetime) -> tuple[datetime, datetime]:
    end = aware(query.end) if query.end else now
    start = aware(query.start) if query.start else end - DEFAULT_WINDOW
    if start >= end:
        raise InputError([{"loc": ("query", "end"), "msg": "Must be after start."}])
    return start, end


@router.get(
    "/gpus/{gpu_id}/samples",
    response={200: SampleSeriesOut, **READ_ERRORS},
    tags=["gpus"],
    summary="Telemetry of one GPU over a time range",
    description=(
        f"Samples with `start <= ts < end`, oldest first, at most {SAMPLE_LIMIT} per answer "
        "(see `truncated` and `next_start`). Default range: the last hour."
    ),
)
def gpu_samples(request: ApiRequest, gpu_id: UUID, query: Query[SampleQuery]) -> dict[str, Any]:
    gpu = get_gpu(gpu_id)
    start, end = sample_range(query, timezone.now())
    resolution = query.resolution or finest_resolution(start, timezone.now())
    rows = list(
        GpuSample.objects.filter(gpu=gpu, resolution=resolution, ts__gte=start, ts__lt=end)
        .order_by("ts")
        .only("ts", "utilization", "memory_used", "temperature", "power_draw")[: SAMPLE_LIMIT + 1]
    )
    truncated = len(rows) > SAMPLE_LIMIT
    return {
        "gpu_id": gpu.pk,
        "resolution": int(resolution),
        "start": start,
        "end": end,
        "limit": SAMPLE_LIMIT,
        "truncated": truncated,
        "next_start": rows[SAMPLE_LIMIT].ts if truncated else None,
        "samples": rows[:SAMPLE_LIMIT],
    }
