"""The model catalog (``CatalogModel``), the copies of models on nodes (``ModelFile``) and
the memory backends were measured to use (``MemoryMeasurement``)."""

from __future__ import annotations

import uuid
from functools import cached_property
from pathlib import PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from inventory.models import Node
from models_app.choices import HOLDING_STATES, DownloadState, SourceKind
from models_app.gguf import ModelFacts


class CatalogModel(models.Model):
    """A model operators can download and deploy: where it comes from, and its GGUF facts.

    ``files`` lists the files of the model in order (one, or every shard of a split
    model): ``[{"name": ..., "size": bytes, "sha256": hex or ""}]``, as the source gave
    them when the model was added. ``facts`` is ``ModelFacts.to_dict()`` of its header,
    read before any download.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    display_name = models.CharField(max_length=200)
    source_kind = models.CharField(max_length=8, choices=SourceKind.choices)
    hf_repo = models.CharField(max_length=200, blank=True)
    hf_filename = models.CharField(max_length=500, blank=True, help_text="the file or first shard")
    revision = models.CharField(max_length=200, default="main", blank=True)
    commit = models.CharField(max_length=64, blank=True, help_text="the revision's commit hash")
    url = models.URLField(max_length=2000, blank=True)
    path = models.CharField(max_length=4096, blank=True, help_text="absolute path on path_node")
    path_node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.CASCADE, related_name="local_models"
    )
    files = models.JSONField(default=list, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0, help_text="all files together")
    architecture = models.CharField(max_length=64, blank=True)
    quantization = models.CharField(max_length=64, blank=True)
    parameter_count = models.PositiveBigIntegerField(default=0)
    context_length = models.PositiveIntegerField(default=0)
    facts = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["display_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["hf_repo", "hf_filename", "revision"],
                condition=Q(source_kind=SourceKind.HF),
                name="catalog_unique_hf_file",
            ),
            models.UniqueConstraint(
                fields=["url"], condition=Q(source_kind=SourceKind.URL), name="catalog_unique_url"
            ),
            models.UniqueConstraint(
                fields=["path_node", "path"],
                condition=Q(source_kind=SourceKind.PATH),
                name="catalog_unique_node_path",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name

    def clean(self) -> None:
        required = {
            SourceKind.HF: ("hf_repo", "hf_filename"),
            SourceKind.URL: ("url",),
            SourceKind.PATH: ("path", "path_node"),
        }.get(SourceKind(self.source_kind), ())
        missing = {name: "This field is required." for name in required if not getattr(self, name)}
        if missing:
            raise ValidationError(missing)
        if self.source_kind == SourceKind.PATH and not PurePosixPath(self.path).is_absolute():
            raise ValidationError({"path": "Give an absolute path on the node."})

    @property
    def source_label(self) -> str:
        if self.source_kind == SourceKind.HF:
            return f"{self.hf_repo}/{self.hf_filename}@{self.revision}"
        if self.source_kind == SourceKind.URL:
            return self.shown_url
        return f"{self.path_node.name if self.path_node else '?'}:{self.path}"

    @property
    def shown_url(self) -> str:
        """The URL as pages and the API show it: without any credentials in it (added
        before they were refused), so a read-only user never sees them."""
        return redact_credentials(self.url)

    @cached_property
    def model_facts(self) -> ModelFacts:
        return ModelFacts.from_dict(self.facts)


class ModelFile(models.Model):
    """One copy of a catalog model on one node (all its shards), and its download.

    ``state`` transitions, each through one action in ``models_app.actions``:
    queued → downloading (a worker claims it) → verifying → ready;
    queued / downloading / verifying → failed (an error) or cancelled (an operator);
    failed / cancelled → queued (retry; the bytes already on disk are kept);
    ready / failed / cancelled → deleting (an operator) → the row is deleted once the
    node's worker has removed the files;
    downloading → downloading (a restarted worker resumes from the bytes on disk).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="copies")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="model_files")
    storage_root = models.CharField(max_length=4096)
    path = models.CharField(max_length=4096, help_text="absolute path of the (first) file")
    state = models.CharField(
        max_length=16, choices=DownloadState.choices, default=DownloadState.QUEUED, db_index=True
    )
    sha256 = models.CharField(
        max_length=64, blank=True, help_text="of the (first) file, once verified"
    )
    bytes_done = models.PositiveBigIntegerField(default=0)
    bytes_total = models.PositiveBigIntegerField(default=0)
    speed = models.FloatField(default=0, help_text="bytes per second, recent")
    eta_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    retrying = models.CharField(
        max_length=500,
        blank=True,
        help_text="while connection retries run: the last error and the attempt (n of m)",
    )
    attempts = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["node", "path"],
                condition=Q(state__in=HOLDING_STATES),
                name="modelfile_one_holder_per_path",
            ),
            models.UniqueConstraint(
                fields=["model", "node"],
                condition=Q(state__in=HOLDING_STATES),
                name="modelfile_one_copy_per_node",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} on {self.node.name} ({self.state})"

    @property
    def percent(self) -> float:
        return 100.0 * self.bytes_done / self.bytes_total if self.bytes_total else 0.0

    @property
    def stopped(self) -> bool:
        """Failed or cancelled: no speed or ETA; the bytes on disk are kept for a resume."""
        return self.state in (DownloadState.FAILED, DownloadState.CANCELLED)

    @property
    def progress_text(self) -> str:
        """``98.9 %``, or ``stopped at 98.9 %`` for a failed or cancelled copy."""
        shown = f"{self.percent:.1f} %"
        return f"stopped at {shown}" if self.stopped else shown

    @property
    def shown_speed(self) -> float | None:
        return self.speed if self.state == DownloadState.DOWNLOADING else None

    @property
    def shown_eta(self) -> float | None:
        return self.eta_seconds if self.state == DownloadState.DOWNLOADING else None

    @property
    def shown_retrying(self) -> str:
        return self.retrying if self.state == DownloadState.DOWNLOADING else ""

    @property
    def is_active(self) -> bool:
        return self.state in (
            DownloadState.QUEUED,
            DownloadState.DOWNLOADING,
            DownloadState.VERIFYING,
        )


class MemoryMeasurement(models.Model):
    """What llama.cpp allocated for one model file, run settings and kind of device, as a
    running instance measured it: the figures later estimates learn from
    (``models_app.learning``).

    ``model_key`` identifies the file by its layout (``learning.fingerprint``: tensors and
    hyperparameters, so a copy anywhere or a header read from the hub has the same key);
    ``settings_key`` the settings as they decide memory (``learning.settings_key``: the
    resolved context, batches, cache types, layers per device …; ``settings`` keeps them
    to estimate again). ``device_kind`` is "cpu" for a CPU-only instance, else the GPUs'
    product name ("NVIDIA L4"; mixed products joined with " + ").

    ``buffers``: llama.cpp device ("CPU", "CUDA0" …) → component (weights, kv_cache,
    compute, output) → bytes, from the backend's load log. ``nvml``: GPU device → the
    highest per-process figure NVML gave for an instance with these keys. The latest
    such instance replaces the buffers (``instance_id``, ``measured_at``).
    """

    model_key = models.CharField(max_length=64, db_index=True)
    settings_key = models.CharField(max_length=64)
    device_kind = models.CharField(max_length=300)
    settings = models.JSONField(default=dict)
    buffers = models.JSONField(default=dict)
    nvml = models.JSONField(default=dict, blank=True)
    model = models.ForeignKey(
        CatalogModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="memory_measurements",
    )
    instance_id = models.UUIDField(null=True, blank=True, db_index=True)
    measured_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-measured_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_key", "settings_key", "device_kind"],
                name="measurement_one_per_file_settings_kind",
            )
        ]

    def __str__(self) -> str:
        model = self.model or self.model_key[:12]
        return f"{model} on {self.device_kind} ({self.measured_at:%Y-%m-%d})"


def has_credentials(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.username or parts.password or "@" in parts.netloc)


def redact_credentials(url: str) -> str:
    """``https://user:secret@host/x`` → ``https://***@host/x``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
