"""Live events of deployments and instances (sent after commit by ``inventory.events``)."""

from __future__ import annotations

from inventory import events
from scheduling.models import Deployment, Instance


def instance_changed(instance: Instance) -> None:
    events.send(
        "instance.changed",
        instance_id=str(instance.pk),
        deployment_id=str(instance.deployment_id),
        node_id=str(instance.node_id or ""),
    )


def deployment_changed(deployment: Deployment) -> None:
    events.send("deployment.changed", deployment_id=str(deployment.pk))
