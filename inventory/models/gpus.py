from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from inventory.answers import answers
from inventory.choices import PRIORITY_MAX, PRIORITY_MIN
from inventory.models.nodes import Node


class GpuQuerySet(models.QuerySet["Gpu"]):
    def with_claims(self) -> GpuQuerySet:
        """Each GPU's claimed bytes in the same query (``Gpu.claimed`` reads them)."""
        return self.annotate(claimed_bytes=models.Sum("claims__claimed"))


class Gpu(models.Model):
    """One GPU, a component of its node. Readings of the last sample are kept on the row
    so that pages and placement read one table; history lives in ``GpuSample``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveSmallIntegerField()
    uuid = models.CharField(max_length=80, unique=True, help_text="NVML UUID (GPU-…)")
    name = models.CharField(max_length=100)
    memory_total = models.PositiveBigIntegerField(help_text="bytes")
    driver_version = models.CharField(max_length=32, blank=True)
    cuda_version = models.CharField(max_length=16, blank=True)
    compute_capability = models.CharField(max_length=8, blank=True)
    power_limit = models.FloatField(default=0, help_text="watts")
    priority = models.IntegerField(
        default=50,
        validators=[MinValueValidator(PRIORITY_MIN), MaxValueValidator(PRIORITY_MAX)],
        help_text=f"{PRIORITY_MIN}–{PRIORITY_MAX}; higher comes first in device order.",
    )
    enabled = models.BooleanField(default=True, help_text="A disabled GPU gets no new work.")
    reserved_override = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="bytes kept free; empty means the global default"
    )
    present = models.BooleanField(default=True, help_text="False once the probe stops seeing it")
    # last reading
    utilization = models.FloatField(default=0, help_text="percent")
    memory_used = models.PositiveBigIntegerField(default=0, help_text="bytes")
    temperature = models.FloatField(null=True, blank=True, help_text="°C")
    power_draw = models.FloatField(null=True, blank=True, help_text="watts")
    processes = models.JSONField(default=list, blank=True)
    sampled_at = models.DateTimeField(null=True, blank=True)
    # Memory our backends gave back after the last reading (their claims were released
    # when they stopped): still "used" in that reading, free in fact. Reset by the next one.
    released = models.PositiveBigIntegerField(default=0)
    released_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=255, blank=True)

    objects = GpuQuerySet.as_manager()

    class Meta:
        ordering = ["node__name", "index"]
        constraints = [
            models.UniqueConstraint(fields=["node", "index"], name="gpu_unique_index_per_node"),
            models.CheckConstraint(
                condition=models.Q(priority__gte=PRIORITY_MIN, priority__lte=PRIORITY_MAX),
                name="gpu_priority_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node.name}/gpu{self.index} ({self.name})"

    def clean(self) -> None:
        reserved = self.reserved_override
        if reserved is not None and self.memory_total and reserved >= self.memory_total:
            raise ValidationError(
                {"reserved_override": "Reserved memory must be below the GPU's total memory."}
            )

    @property
    def reserved(self) -> int:
        if self.reserved_override is not None:
            return self.reserved_override
        return min(settings.GPUFLEET_RESERVED_DEFAULT, self.memory_total)

    @property
    def memory_free(self) -> int:
        return max(self.memory_total - self.memory_used, 0)

    @property
    def released_since_reading(self) -> int:
        """Bytes our backends gave back after the last reading (still "used" in it, and
        by processes no instance of ours accounts for any more)."""
        since = self.released_at is not None and (
            self.sampled_at is None or self.released_at > self.sampled_at
        )
        return self.released if since else 0

    @property
    def free_now(self) -> int:
        """Free per the last reading, plus what our backends gave back since it."""
        return min(self.memory_free + self.released_since_reading, self.memory_total)

    @property
    def claimed(self) -> int:
        """Bytes our placed instances are expected to use here (their claims). A query
        may annotate ``claimed_bytes`` to save the aggregate per GPU."""
        if "claimed_bytes" in self.__dict__:  # annotated (None: no claims)
            return int(self.__dict__["claimed_bytes"] or 0)
        return int(self.claims.aggregate(total=models.Sum("claimed"))["total"] or 0)

    @property
    def free_for_placement(self) -> int:
        """Bytes a new backend may use here: ``min(total - reserved - claimed - foreign,
        observed_free - reserved)``, never negative. Claims not yet in use count through
        the sum, memory used by processes that are not ours through ``foreign`` (it is
        not in any claim), and the reading caps both."""
        foreign = getattr(self, "foreign_bytes", None)
        if foreign is None:
            foreign = self.foreign_memory
        by_accounting = self.memory_total - self.reserved - self.claimed - foreign
        by_reading = self.memory_free - self.reserved
        return max(min(by_accounting, by_reading), 0)

    @property
    def usable(self) -> int:
        """What placement may ever use here: total less the reserve."""
        return max(self.memory_total - self.reserved, 0)

    def our_pids(self) -> set[int]:
        """Server pids of our backends that hold claims on this GPU."""
        return answers.backend_pids(gpu=self)

    @property
    def foreign_memory(self) -> int:
        """Memory used here by processes gpufleet does not run: the reading less what
        NVML attributes to our backends' processes (the driver's own use included)."""
        return self.foreign_given(self.our_pids())

    def foreign_given(self, ours: set[int]) -> int:
        """``foreign_memory`` when the server pids of our backends are known already."""
        mine = sum(
            int(p.get("memory_used", 0)) for p in self.processes or [] if p.get("pid") in ours
        )
        return max(self.memory_used - mine, 0)
