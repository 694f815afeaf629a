"""Live events of deployments and instances (sent after commit by ``core.events``)."""

from __future__ import annotations

from core import events
from scheduling.models import Deployment, Instance


def _fields(instance: Instance) -> dict[str, str]:
    return {
        "instance_id": str(instance.pk),
        "deployment_id": str(instance.deployment_id),
        "node_id": str(instance.node_id or ""),
    }


def instance_changed(instance: Instance) -> None:
    events.send("instance.changed", **_fields(instance))


def instances_changed(instances: list[Instance]) -> None:
    """One ``instance.changed`` per instance, written together (a placement pass)."""
    events.send_many("instance.changed", [_fields(instance) for instance in instances])


def instances_read(instances: list[Instance]) -> None:
    """``instance.readings``: the backend's own figures of these instances changed
    (``Instance.readings``). Its own kind, not ``instance.changed``: the gateway reloads
    its routing table on that, and must not every 2 s."""
    events.send_many("instance.readings", [_fields(instance) for instance in instances])


def deployment_changed(deployment: Deployment) -> None:
    events.send("deployment.changed", deployment_id=str(deployment.pk))
