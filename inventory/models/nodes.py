from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from inventory.choices import NodeStatus

node_name_validator = RegexValidator(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    "Use lowercase letters, digits and '-' (like a hostname), at most 63 characters.",
)


class Node(models.Model):
    """A machine that runs an agent.

    ``status`` transitions (each through one action in ``inventory.actions``):
    online → offline (missed heartbeats), online → maintenance (a window starts),
    online ↔ draining (operator; online → draining also ``GPUFLEET_DRAIN_BEFORE`` ahead
    of a maintenance window), draining → offline / maintenance, offline → online
    (heartbeat returns),
    offline → maintenance (a window starts), maintenance → online / offline (the window
    ends; offline if the heartbeat is stale by then).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=63, unique=True, validators=[node_name_validator])
    address = models.CharField(max_length=255, default="127.0.0.1")
    status = models.CharField(
        max_length=16, choices=NodeStatus.choices, default=NodeStatus.ONLINE, db_index=True
    )
    labels = models.JSONField(default=dict, blank=True)
    cpu_count = models.PositiveIntegerField(default=0)
    ram_total = models.PositiveBigIntegerField(default=0, help_text="bytes")
    ram_available = models.PositiveBigIntegerField(default=0, help_text="bytes")
    disk_free = models.JSONField(default=dict, blank=True, help_text="storage root → bytes free")
    storage_roots = models.JSONField(
        default=list,
        blank=True,
        help_text="the storage roots in the agent's order (the first is the default); "
        "disk_free's keys cannot keep it: PostgreSQL's jsonb sorts them",
    )
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    agent_version = models.CharField(max_length=32, blank=True)
    probe_message = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        roots = [r for r in self.storage_roots or [] if r in self.disk_free]
        roots += [r for r in self.disk_free if r not in roots]
        if roots != self.storage_roots:  # rows written without an agent (admin, tests)
            self.storage_roots = roots
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "storage_roots"}
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if not isinstance(self.labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.labels.items()
        ):
            raise ValidationError({"labels": "Labels must be an object of string → string."})

    @property
    def accepts_work(self) -> bool:
        return self.status == NodeStatus.ONLINE

    def heartbeat_age(self, now: datetime | None = None) -> float | None:
        if self.last_heartbeat is None:
            return None
        return ((now or timezone.now()) - self.last_heartbeat).total_seconds()


class MaintenanceWindowQuerySet(models.QuerySet["MaintenanceWindow"]):
    def active(self, now: datetime | None = None) -> MaintenanceWindowQuerySet:
        now = now or timezone.now()
        return self.filter(starts_at__lte=now, ends_at__gt=now)

    def announced(self, now: datetime | None = None) -> MaintenanceWindowQuerySet:
        """Windows shown on every page: active, or starting within the next week."""
        now = now or timezone.now()
        return self.filter(ends_at__gt=now, starts_at__lte=now + timedelta(days=7))


class MaintenanceWindow(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="maintenance_windows")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    message = models.CharField(max_length=500)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MaintenanceWindowQuerySet.as_manager()

    class Meta:
        ordering = ["starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")), name="window_ends_after_start"
            )
        ]

    def __str__(self) -> str:
        return f"{self.node} {self.starts_at:%Y-%m-%d %H:%M}–{self.ends_at:%H:%M}"

    def clean(self) -> None:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "The window must end after it starts."})

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.starts_at <= now < self.ends_at
