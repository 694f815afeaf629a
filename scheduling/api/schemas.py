"""Schemas of the scheduling API. Numbers and flags are strict, as in the GPU and
estimate endpoints: ``"7"``, ``true`` or ``7.0`` for a number and ``"yes"`` or ``1`` for a
flag are refused (ids and times still come as JSON strings)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict, Strict, field_validator

from scheduling.deployment_fields import default, least, most

OptionValue = str | int | float | bool
Int = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
BackendName = Literal["llama_server", "llama_cpp_python"]
Kind = Literal["chat", "embedding", "reranker"]
PoolingName = Literal["", "none", "mean", "cls", "last", "rank"]


class DeploymentIn(Schema):
    model_config = ConfigDict(extra="forbid")

    model_id: UUID
    served_name: str = Field(max_length=128, description="the name clients ask for")
    replicas: Int = Field(
        default("replicas"),
        ge=least("replicas"),
        le=most("replicas"),
        description="the most instances it runs",
    )
    min_replicas: Int | None = Field(
        None,
        ge=least("min_replicas"),
        le=most("min_replicas"),
        description="kept running without traffic; 0: scale to "
        "zero (started by the first request); left out: replicas (always on)",
    )
    idle_timeout: Int = Field(
        default("idle_timeout"),
        ge=least("idle_timeout"),
        le=most("idle_timeout"),
        description="seconds idle before release",
    )
    cold_start_timeout: Int = Field(
        default("cold_start_timeout"),
        ge=least("cold_start_timeout"),
        le=most("cold_start_timeout"),
        description="seconds a request waits",
    )
    max_queue: Int = Field(
        default("max_queue"),
        ge=least("max_queue"),
        le=most("max_queue"),
        description="requests that may wait",
    )
    n_ctx: Int = Field(
        default("n_ctx"), ge=least("n_ctx"), le=most("n_ctx"), description="context size in tokens"
    )
    parallel: Int = Field(
        default("parallel"),
        ge=least("parallel"),
        le=most("parallel"),
        description="parallel slots, each with the full context (llama_server; "
        "llama_cpp_python serves 1)",
    )
    backend: BackendName = Field("llama_server", description="the server each instance runs")
    kind: Kind = Field("chat", description="what it serves: chat, embeddings or reranking")
    pooling: PoolingName = Field(
        "", description="embedding / reranker pooling; empty: the model's own"
    )
    cache_ram: Int = Field(
        default("cache_ram"),
        ge=least("cache_ram"),
        le=most("cache_ram"),
        description="MiB of host RAM for llama-server's prompt cache",
    )
    cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    flash_attn: Flag = False
    policy: Literal["binpack", "spread"] = "binpack"
    node_labels: dict[str, str] = Field(default_factory=dict)
    only_gpus: list[UUID] = Field(default_factory=list, description="GPU ids; empty: any")
    exclude_gpus: list[UUID] = Field(default_factory=list)
    priority: Int = Field(default("priority"), ge=least("priority"), le=most("priority"))
    allow_cpu_offload: Flag = False
    allow_multi_gpu: Flag = False
    extra_options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="server options from the chosen backend's allowed list",
    )


class DeploymentPatch(Schema):
    """Settings to change; left out: unchanged. Running instances keep the settings they
    started with until they are restarted (stop, then start)."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: Int | None = Field(None, ge=least("n_ctx"), le=most("n_ctx"))
    parallel: Int | None = Field(None, ge=least("parallel"), le=most("parallel"))
    backend: BackendName | None = None
    kind: Kind | None = None
    pooling: PoolingName | None = None
    cache_ram: Int | None = Field(None, ge=least("cache_ram"), le=most("cache_ram"))
    idle_timeout: Int | None = Field(None, ge=least("idle_timeout"), le=most("idle_timeout"))
    cold_start_timeout: Int | None = Field(
        None, ge=least("cold_start_timeout"), le=most("cold_start_timeout")
    )
    max_queue: Int | None = Field(None, ge=least("max_queue"), le=most("max_queue"))
    cache_type: Literal["f16", "q8_0", "q4_0"] | None = None
    flash_attn: Flag | None = None
    policy: Literal["binpack", "spread"] | None = None
    node_labels: dict[str, str] | None = None
    only_gpus: list[UUID] | None = None
    exclude_gpus: list[UUID] | None = None
    priority: Int | None = Field(None, ge=least("priority"), le=most("priority"))
    allow_cpu_offload: Flag | None = None
    allow_multi_gpu: Flag | None = None
    extra_options: dict[str, OptionValue] | None = None

    @field_validator(
        "n_ctx", "parallel", "backend", "kind", "pooling", "cache_ram", "idle_timeout",
        "cold_start_timeout", "max_queue", "cache_type", "flash_attn", "policy", "node_labels",
        "priority", "allow_cpu_offload", "allow_multi_gpu", "extra_options",
    )  # fmt: skip
    @classmethod
    def not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("May not be null.")
        return value


class ScaleIn(Schema):
    model_config = ConfigDict(extra="forbid")

    replicas: Int = Field(ge=least("replicas"), le=most("replicas"))
    min_replicas: Int | None = Field(
        None,
        ge=least("min_replicas"),
        le=most("min_replicas"),
        description="left out: an always-on deployment stays so",
    )


class ClaimOut(Schema):
    gpu_id: UUID
    node: str
    index: int
    position: int = Field(description="CUDA device number inside the backend")
    estimated: int
    measured: int | None
    claimed: int


class RunOut(Schema):
    number: int
    started_at: datetime
    ready_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    exit_signal: str
    outcome: str
    measured: dict[str, int]


class InstanceOut(Schema):
    id: UUID
    deployment_id: UUID
    served_name: str
    node: str | None
    state: str
    placement_kind: str
    n_gpu_layers: int
    tensor_split: list[float] | None
    port: int | None
    backend: str = Field(description="the server it was launched with (empty before)")
    readings: dict[str, Any] = Field(
        description="the backend's own figures read by the agent (llama_server): slots, busy, "
        "deferred, tokens_per_second, prompt_tokens_per_second, kv_used (0..1), "
        "tokens_total, prompt_tokens_total, at (unix time); empty when none"
    )
    pid: int | None
    server_pid: int | None
    restart_count: int
    next_attempt_at: datetime | None
    reason: str
    last_error: str
    estimated: dict[str, int]
    measured: dict[str, int]
    claims: list[ClaimOut]
    created_at: datetime
    ready_at: datetime | None


class DeploymentOut(Schema):
    id: UUID
    model_id: UUID
    model: str
    served_name: str
    replicas: int
    min_replicas: int
    demand: int
    idle_timeout: int
    cold_start_timeout: int
    max_queue: int
    desired_state: str
    n_ctx: int
    parallel: int
    backend: str
    kind: str
    pooling: str
    cache_ram: int
    cache_type: str
    flash_attn: bool
    policy: str
    node_labels: dict[str, str]
    only_gpus: list[UUID]
    exclude_gpus: list[UUID]
    priority: int
    allow_cpu_offload: bool
    allow_multi_gpu: bool
    extra_options: dict[str, OptionValue]
    estimate_notes: list[str] = Field(
        default_factory=list,
        description="why the memory estimate is approximate (upper bound), and what of it "
        "is learned from measurements",
    )
    instances: list[InstanceOut]
    created_at: datetime


class PlacementOut(Schema):
    node_id: UUID
    node: str
    kind: str
    gpus: list[dict[str, object]]
    host_bytes: int
    n_gpu_layers: int
    tensor_split: list[float] | None
    needs_download: bool


class PreviewOut(Schema):
    fits: bool
    placement: PlacementOut | None = None
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list,
        description="why the memory estimate is approximate (upper bound), and what of it "
        "is learned from measurements",
    )


class LogOut(Schema):
    instance_id: UUID
    run: int | None
    lines: list[str]
