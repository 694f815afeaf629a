"""Inference keys (who may call ``/v1``) and usage per minute, key and deployment.

Inference keys are not the REST API's tokens: another table, another prefix, checked
only by the gateway; a REST token is refused on ``/v1`` and a key on ``/api/v1``.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from inventory.models.tokens import digest as token_digest

KEY_PREFIX = "gfk_"


key_digest = token_digest  # the same hash as the REST API's tokens, another table


def _served_names(value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValidationError("A list of served names (empty: every model).")


class InferenceKey(models.Model):
    """A bearer key for the OpenAI-compatible gateway. Only its SHA-256 is stored; the
    plain key is shown once, when it is created. Revoked or expired keys are refused."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="first characters, to recognise it")
    digest = models.CharField(max_length=64, unique=True)
    served_names = models.JSONField(
        default=list, blank=True, validators=[_served_names], help_text="empty: every model"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(
        cls,
        name: str,
        user: Any = None,
        served_names: Iterable[str] = (),
        expires_at: datetime | None = None,
    ) -> tuple[InferenceKey, str]:
        """A new key and its plain text (shown once, never stored)."""
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = cls(
            name=name,
            prefix=raw[:12],
            digest=key_digest(raw),
            served_names=sorted(set(served_names)),
            expires_at=expires_at,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        key.full_clean()
        key.save(force_insert=True)
        return key, raw

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.is_active() else "expired"


class UsageMinute(models.Model):
    """What one key sent to one deployment in one minute (written in batches by the
    gateway, never on the request path). ``served_name`` stays when the deployment goes."""

    minute = models.DateTimeField(db_index=True)
    key = models.ForeignKey(
        InferenceKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage"
    )
    deployment = models.ForeignKey(
        "scheduling.Deployment",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage",
    )
    served_name = models.CharField(max_length=128)
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    ttft_ms_sum = models.FloatField(default=0.0, help_text="sum of times to first token")
    ttft_count = models.PositiveBigIntegerField(default=0)
    queue_ms_sum = models.FloatField(default=0.0, help_text="sum of waits for an instance")
    cold_starts = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "key", "served_name"], name="usage_one_row_per_minute"
            )
        ]

    def __str__(self) -> str:
        return f"{self.served_name} {self.minute:%Y-%m-%d %H:%M}"
