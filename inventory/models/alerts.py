from __future__ import annotations

from django.db import models
from django.db.models import Q

from inventory.choices import AlertKind, Severity
from inventory.models.gpus import Gpu
from inventory.models.nodes import Node


class AlertQuerySet(models.QuerySet["Alert"]):
    def active(self) -> AlertQuerySet:
        return self.filter(cleared_at__isnull=True)


class Alert(models.Model):
    """A hardware condition, raised and cleared automatically.

    ``key`` names the condition (``gpu_temperature:<gpu uuid>``); at most one alert per
    key is active at a time (a partial unique constraint), so raising twice is harmless.
    """

    key = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    node = models.ForeignKey(Node, null=True, blank=True, on_delete=models.CASCADE)
    gpu = models.ForeignKey(Gpu, null=True, blank=True, on_delete=models.CASCADE)
    message = models.CharField(max_length=500)
    raised_at = models.DateTimeField(auto_now_add=True)
    cleared_at = models.DateTimeField(null=True, blank=True, db_index=True)

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-raised_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                condition=Q(cleared_at__isnull=True),
                name="alert_one_active_per_key",
            )
        ]

    def __str__(self) -> str:
        return self.message

    @property
    def is_active(self) -> bool:
        return self.cleared_at is None
