"""Raising and clearing hardware alerts. Both are idempotent: the partial unique
constraint on ``Alert.key`` keeps at most one active alert per condition."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from core import events
from inventory.choices import AlertKind, Severity
from inventory.models import Alert, Gpu, Node


def raise_alert(
    key: str,
    kind: AlertKind,
    message: str,
    *,
    severity: Severity = Severity.WARNING,
    node: Node | None = None,
    gpu: Gpu | None = None,
) -> bool:
    """Return True when a new alert was raised (False if it was already active)."""
    if Alert.objects.active().filter(key=key).exists():
        return False
    try:
        with transaction.atomic():
            Alert.objects.create(
                key=key, kind=kind, message=message, severity=severity, node=node, gpu=gpu
            )
    except IntegrityError:  # raised concurrently by another process
        return False
    events.send("alerts.changed")
    return True


def clear_alert(key: str) -> bool:
    cleared = Alert.objects.active().filter(key=key).update(cleared_at=timezone.now())
    if cleared:
        events.send("alerts.changed")
    return bool(cleared)


def node_offline_key(node: Node) -> str:
    return f"{AlertKind.NODE_OFFLINE}:{node.pk}"


def gpu_key(kind: AlertKind, gpu: Gpu) -> str:
    return f"{kind}:{gpu.uuid}"
