"""Deployments (what operators ask for), instances (replicas placed on a node), the GPU
memory each instance claims, and the runs of each instance's backend process."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import BaseConstraint, Q
from django.db.models.functions import Lower

from inventory.models import Gpu, Node
from models_app.models import CatalogModel, MemoryMeasurement, ModelFile
from scheduling.choices import (
    DEFAULT_N_CTX,
    Backend,
    CacheType,
    DesiredState,
    InstanceState,
    ModelKind,
    PlacementKind,
    PlacementPolicy,
    Pooling,
)
from scheduling.options import clean_options

served_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$",
    "Use letters, digits and . _ : / - (at most 128 characters), as clients will type it.",
)
MAX_REPLICAS = 64
MAX_N_CTX = 10_000_000  # tokens; far above any model's trained context
MAX_PARALLEL = 64
SERVED_NAME_UNIQUE = "deployment_served_name_unique_any_case"


class Deployment(models.Model):
    """A model served under a name, with the settings its backends run with.

    ``desired_state``: running ↔ stopped (operator), running / stopped → deleting
    (operator; the row goes once its instances have stopped).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="deployments")
    # Unique without regard to case (``TINY`` and ``tiny`` are one name to a person): the
    # constraint on Lower(served_name) below; the plain index serves exact lookups.
    served_name = models.CharField(
        max_length=128, db_index=True, validators=[served_name_validator]
    )
    replicas = models.PositiveSmallIntegerField(
        default=1,
        validators=[MaxValueValidator(MAX_REPLICAS)],
        help_text="the most instances it runs",
    )
    min_replicas = models.PositiveSmallIntegerField(
        default=1,
        validators=[MaxValueValidator(MAX_REPLICAS)],
        help_text="instances kept running without traffic (0: scale to zero)",
    )
    demand = models.PositiveSmallIntegerField(
        default=0, help_text="instances asked for by the gateway's traffic (on demand)"
    )
    idle_timeout = models.PositiveIntegerField(
        default=300,
        validators=[MinValueValidator(1), MaxValueValidator(30 * 86400)],
        help_text="seconds without a request before an instance above min_replicas stops",
    )
    cold_start_timeout = models.PositiveIntegerField(
        default=600,
        validators=[MinValueValidator(1), MaxValueValidator(86400)],
        help_text="seconds a request waits for a cold start",
    )
    max_queue = models.PositiveIntegerField(
        default=64,
        validators=[MaxValueValidator(100_000)],
        help_text="requests that may wait for an instance (more: 429)",
    )
    waiting = models.PositiveIntegerField(
        default=0, editable=False, help_text="requests the gateway holds for a cold start"
    )
    waiting_since = models.DateTimeField(null=True, blank=True, editable=False)
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING
    )
    n_ctx = models.PositiveIntegerField(
        default=DEFAULT_N_CTX,
        validators=[MinValueValidator(256), MaxValueValidator(MAX_N_CTX)],
        help_text="context size in tokens",
    )
    parallel = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_PARALLEL)],
        help_text="parallel slots: requests one backend serves at once, each with the full "
        "context (llama-server only)",
    )
    backend = models.CharField(
        max_length=20,
        choices=Backend.choices,
        default=Backend.LLAMA_SERVER,
        help_text="the server each instance runs",
    )
    kind = models.CharField(
        max_length=12,
        choices=ModelKind.choices,
        default=ModelKind.CHAT,
        help_text="what it serves: chat/completions, embeddings or reranking",
    )
    pooling = models.CharField(
        max_length=8,
        choices=Pooling.choices,
        default=Pooling.MODEL,
        blank=True,
        help_text="embedding / reranker pooling; blank: the model's own",
    )
    cache_ram = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(1024 * 1024)],
        help_text="MiB of host RAM for llama-server's prompt cache (0: none); counted as "
        "host memory at placement",
    )
    cache_type = models.CharField(max_length=8, choices=CacheType.choices, default=CacheType.F16)
    flash_attn = models.BooleanField(default=False)
    policy = models.CharField(
        max_length=16, choices=PlacementPolicy.choices, default=PlacementPolicy.BINPACK
    )
    node_labels = models.JSONField(default=dict, blank=True, help_text="labels a node must have")
    only_gpus = models.ManyToManyField(Gpu, blank=True, related_name="pinned_deployments")
    exclude_gpus = models.ManyToManyField(Gpu, blank=True, related_name="excluding_deployments")
    priority = models.IntegerField(
        default=50, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    allow_cpu_offload = models.BooleanField(default=False)
    allow_multi_gpu = models.BooleanField(default=False)
    extra_options = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["served_name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(replicas__lte=MAX_REPLICAS), name="deployment_replicas_bounded"
            ),
            models.CheckConstraint(
                condition=Q(n_ctx__gte=256), name="deployment_context_at_least_256"
            ),
            models.CheckConstraint(
                condition=Q(min_replicas__lte=models.F("replicas")),
                name="deployment_min_replicas_at_most_replicas",
            ),
            models.UniqueConstraint(Lower("served_name"), name=SERVED_NAME_UNIQUE),
        ]

    def __str__(self) -> str:
        return self.served_name

    def validate_unique(self, exclude: Collection[str] | None = None) -> None:
        """The served name, without regard to case, with the taken name in the message."""
        super().validate_unique(exclude)
        if exclude and "served_name" in exclude:
            return
        taken = served_name_taken(self.served_name, but=self.pk)
        if taken is not None:
            raise ValidationError({"served_name": served_name_taken_message(taken)})

    def get_constraints(self) -> list[tuple[type[models.Model], Sequence[BaseConstraint]]]:
        """``validate_unique`` checks the served name's constraint, on the field."""
        return [
            (model, [c for c in constraints if c.name != SERVED_NAME_UNIQUE])
            for model, constraints in super().get_constraints()
        ]

    def clean(self) -> None:
        errors: dict[str, str] = {}
        errors |= self._context_errors()
        if self.min_replicas > self.replicas:
            errors["min_replicas"] = "At most as many as replicas (the most it runs)."
        errors |= self._backend_errors()
        if self.cache_type != CacheType.F16 and not self.flash_attn:
            errors["cache_type"] = "A quantized K/V cache needs flash attention."
        if not _is_labels(self.node_labels):
            errors["node_labels"] = "Labels must be an object of string → string."
        _, option_errors = clean_options(self.extra_options, self.backend)
        if option_errors:
            errors["extra_options"] = "; ".join(f"{k}: {v}" for k, v in option_errors.items())
        if errors:
            raise ValidationError(errors)

    def _backend_errors(self) -> dict[str, str]:
        errors: dict[str, str] = {}
        if self.backend == Backend.LLAMA_CPP_PYTHON:
            if self.parallel != 1:
                errors["parallel"] = (
                    "llama-cpp-python's server serves one request at a time: use 1 parallel "
                    "slot and more replicas, or the llama-server backend."
                )
            if self.kind == ModelKind.RERANKER:
                errors["kind"] = "llama-cpp-python's server cannot rerank: use llama-server."
            if self.pooling or self.cache_ram:
                field = "pooling" if self.pooling else "cache_ram"
                errors[field] = "Only the llama-server backend takes this setting."
        if self.kind == ModelKind.CHAT and self.pooling:
            errors["pooling"] = "Pooling applies to embedding and reranker deployments only."
        if self.kind == ModelKind.RERANKER and self.pooling not in ("", Pooling.RANK):
            errors["pooling"] = "A reranker pools with rank (or the model's own)."
        if self.kind == ModelKind.EMBEDDING and self.pooling == Pooling.RANK:
            errors["pooling"] = "rank pooling makes a reranker: choose the reranker kind."
        return errors

    def _context_errors(self) -> dict[str, str]:
        if self.model_id is None or not self.n_ctx:
            return {}
        trained = self.model.context_length
        if trained and self.n_ctx > trained:
            return {"n_ctx": f"{self.model} supports at most {trained} tokens of context."}
        return {}

    @property
    def options(self) -> dict[str, str]:
        return clean_options(self.extra_options, self.backend)[0]

    @property
    def wanted_replicas(self) -> int:
        """How many instances it should have now: none unless running; else what traffic
        asks for (``demand``), at least ``min_replicas``, at most ``replicas``."""
        if self.desired_state != DesiredState.RUNNING:
            return 0
        return min(self.replicas, max(self.min_replicas, self.demand))

    @property
    def on_demand(self) -> bool:
        return self.min_replicas < self.replicas


def served_name_taken(name: str, but: Any = None) -> str | None:
    """The served name of another deployment that equals ``name`` but for case, if any."""
    others = Deployment.objects.filter(served_name__iexact=name)
    if but is not None:
        others = others.exclude(pk=but)
    return others.values_list("served_name", flat=True).first()


def served_name_taken_message(taken: str) -> str:
    return f"A deployment already serves {taken!r}."


def _is_labels(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


class Instance(models.Model):
    """One replica of a deployment, placed on one node.

    ``state`` transitions, each one conditional UPDATE in ``scheduling.lifecycle``
    (``move`` and the ``do_*`` built on it), except placement: the pass in
    ``scheduling.placement_pass`` writes pending → scheduled together with the GPU claims, in
    the transaction that locked the fleet (``stage_placement``, then a bulk update):
    pending → scheduled (placed: claims written) → waiting_for_files (the node has no
    ready copy: a download was requested) → scheduled (the copy is ready) → starting
    (the node's worker launched the backend) → running (it answers ``/v1/models``) →
    stopping → stopped; starting / running → failed (the process died: claims
    released; back to pending after a backoff); starting / running → unreachable (the
    node went offline) → running (its agent adopted the process again) or failed;
    pending / scheduled / waiting_for_files → stopped (stopped before it started).
    A replacement (``replaces``) is made for an instance whose node was lost for longer
    than ``GPUFLEET_FAILOVER_AFTER`` or is draining; see ``scheduling.replacing``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="instances")
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.SET_NULL, related_name="instances"
    )
    model_file = models.ForeignKey(
        ModelFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="instances"
    )
    state = models.CharField(
        max_length=20, choices=InstanceState.choices, default=InstanceState.PENDING, db_index=True
    )
    placement_kind = models.CharField(max_length=16, choices=PlacementKind.choices, blank=True)
    n_gpu_layers = models.IntegerField(default=0)
    tensor_split = models.JSONField(null=True, blank=True)
    host_bytes = models.PositiveBigIntegerField(default=0, help_text="estimated host memory")
    estimated = models.JSONField(default=dict, blank=True, help_text="device → bytes")
    measured = models.JSONField(default=dict, blank=True, help_text="device → bytes")
    port = models.PositiveIntegerField(null=True, blank=True)
    backend = models.CharField(
        max_length=20, choices=Backend.choices, blank=True, help_text="the server it runs"
    )
    # The backend's own figures, read by the agent (scheduling.readings): slots busy,
    # tokens/s, requests deferred, KV cache use, when.
    readings = models.JSONField(default=dict, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True, help_text="the runner's pid")
    server_pid = models.PositiveIntegerField(null=True, blank=True)
    restart_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, help_text="why it waits, or what went wrong")
    last_error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    last_request_at = models.DateTimeField(null=True, blank=True)
    # When its current start began (created, or back to pending), was placed, and had its
    # file on the node: the phases of a start (``InstanceRun.phases``).
    pending_since = models.DateTimeField(null=True, blank=True)
    placed_at = models.DateTimeField(null=True, blank=True)
    files_at = models.DateTimeField(null=True, blank=True)
    # The instance this one replaces (its node was lost, or is draining): the two count
    # as one replica until one of them ends (``scheduling.replacing``). Unique: never
    # two replacements for one instance, whoever runs the pass.
    replaces = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replacements"
    )
    # What its run's load log measured (``scheduling.measuring``); NVML's per-process peaks
    # go to the same row, although a later instance with the same keys took it over.
    measurement = models.ForeignKey(
        MemoryMeasurement, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["deployment__served_name", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["replaces"], name="instance_one_replacement"),
            models.UniqueConstraint(
                fields=["node", "port"],
                condition=Q(port__isnull=False),
                name="instance_unique_port_per_node",
            ),
        ]

    def __str__(self) -> str:
        where = self.node.name if self.node else "unplaced"
        return f"{self.deployment.served_name} #{str(self.pk)[:8]} on {where} ({self.state})"

    @property
    def short_id(self) -> str:
        return str(self.pk)[:8]

    @property
    def last_activity(self) -> Any:
        """Its last request, or when it became ready (or was created) if later or none."""
        marks = [t for t in (self.last_request_at, self.ready_at) if t is not None]
        return max(marks) if marks else self.created_at

    def idle_seconds(self, now: Any) -> float:
        """Seconds since ``last_activity`` (idle release and eviction rank by it)."""
        return float((now - self.last_activity).total_seconds())

    @property
    def current_run(self) -> InstanceRun | None:
        return self.runs.order_by("-number").first()


class GpuClaim(models.Model):
    """Bytes an instance is expected to use on one GPU, held while it is placed.

    ``claimed`` is the estimate until the backend reports its real buffers, then the
    measurement; the sum over a GPU is its ``claimed`` in the memory accounting.
    ``position`` is the GPU's place in the instance's device order (CUDA0, CUDA1, …).
    """

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="claims")
    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="claims")
    position = models.PositiveSmallIntegerField()
    estimated = models.PositiveBigIntegerField()
    measured = models.PositiveBigIntegerField(null=True, blank=True)
    claimed = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["instance", "position"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "gpu"], name="claim_one_per_gpu"),
            models.UniqueConstraint(fields=["instance", "position"], name="claim_one_per_position"),
        ]

    def __str__(self) -> str:
        return f"{self.instance} claims {self.claimed} B on {self.gpu}"


class InstanceRun(models.Model):
    """One start of an instance's backend: its log file, how it ended."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField()
    node = models.ForeignKey(Node, null=True, on_delete=models.SET_NULL, related_name="+")
    log_path = models.CharField(max_length=4096)
    started_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    exit_signal = models.CharField(max_length=16, blank=True)
    last_lines = models.TextField(blank=True)
    measured = models.JSONField(default=dict, blank=True)
    launched_at = models.DateTimeField(null=True, blank=True, help_text="pids recorded")
    server_pid = models.PositiveIntegerField(null=True, blank=True)
    phases = models.JSONField(
        default=dict, blank=True, help_text="seconds: placement, download, queue, spawn, load"
    )

    class Meta:
        ordering = ["instance", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "number"], name="run_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.instance} run {self.number}"

    PHASES = ("placement", "download", "queue", "spawn", "load")

    @property
    def phase_rows(self) -> list[tuple[str, float]]:
        return [(name, self.phases[name]) for name in self.PHASES if name in self.phases]

    @property
    def phase_total(self) -> float | None:
        return round(sum(self.phases.values()), 3) if self.phases else None

    @property
    def outcome(self) -> str:
        if self.ended_at is None:
            return "running" if self.ready_at else "starting"
        if self.exit_signal:
            return f"killed by {self.exit_signal}"
        return f"exit code {self.exit_code}"


def log_file_name(served_name: str, instance_id: str, number: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", served_name).strip("._") or "model"
    return f"{safe}-{instance_id[:8]}-run{number}.log"


class Eviction(models.Model):
    """An idle instance stopped to make room for another deployment's instance: shown on
    both deployments' pages ("stopped X (priority 10, idle 4 min, reload ≈ 3 s) to start
    Y"). Written by the placement pass that chose it (``scheduling.evicting``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    evicted = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="evictions_suffered"
    )
    evicted_instance = models.ForeignKey(
        Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    for_deployment = models.ForeignKey(
        Deployment, on_delete=models.CASCADE, related_name="evictions_caused"
    )
    for_instance = models.ForeignKey(
        Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.CharField(max_length=500)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return self.text


def backend_pids(**claim_filter: object) -> set[int]:
    """Server pids of our backends with claims matching ``claims__<filter>`` (e.g. ``gpu``,
    ``gpu__node``): the processes on a GPU that are gpufleet's own."""
    lookup = {f"claims__{key}": value for key, value in claim_filter.items()}
    pids = Instance.objects.filter(**lookup).values_list("server_pid", flat=True)
    return {pid for pid in pids if pid}
