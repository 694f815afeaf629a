from django.db import models

from inventory.choices import Resolution
from inventory.models.gpus import Gpu


class GpuSample(models.Model):
    """One reading (``resolution`` 1 s) or the mean of a span (60 s, 900 s)."""

    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="samples")
    ts = models.DateTimeField()
    resolution = models.PositiveSmallIntegerField(choices=Resolution.choices)
    utilization = models.FloatField()
    memory_used = models.PositiveBigIntegerField()
    temperature = models.FloatField(null=True)
    power_draw = models.FloatField(null=True)
    processes = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["gpu", "resolution", "ts"], name="sample_series")]
        constraints = [
            models.UniqueConstraint(
                fields=["gpu", "resolution", "ts"], name="sample_unique_per_series"
            )
        ]

    def __str__(self) -> str:
        return f"{self.gpu_id} {self.ts:%H:%M:%S} ({self.resolution}s)"
