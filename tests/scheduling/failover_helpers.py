"""Helpers for the failover and drain tests: a deployment placed on node-a of the
``fleet`` fixture, backends pretended running (no process: the tests look at the
database, the queued tasks and the events)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from inventory.choices import NodeStatus
from models_app.choices import DownloadState
from scheduling import actions, lifecycle, supervisor
from scheduling.choices import InstanceState
from scheduling.models import Deployment, Instance
from tests.factories import ModelFileFactory

S = InstanceState


def deploy_on_a(fleet, model, capture, replicas: int = 1) -> Deployment:
    """A deployment whose replicas all run on node-a (its file is there and on node-b)."""
    for node in (fleet["a"], fleet["b"]):
        ModelFileFactory(model=model, node=node, state=DownloadState.READY)
    fleet["b"].status = NodeStatus.DRAINING  # keep node-b out of the first placement
    fleet["b"].save()
    with capture(execute=True):
        deployment = actions.do_create_deployment(
            model=model, served_name="seven-b", replicas=replicas, n_ctx=4096
        )
    fleet["b"].status = NodeStatus.ONLINE
    fleet["b"].save()
    for instance in deployment.instances.all():
        assert instance.node == fleet["a"]
        run(instance)
    return deployment


def run(instance: Instance) -> Instance:
    """What the worker and the backend's readiness check would do."""
    Instance.objects.filter(pk=instance.pk).update(state=S.STARTING, server_pid=4242)
    instance.refresh_from_db()
    assert lifecycle.do_mark_running(instance, {})
    instance.refresh_from_db()
    return instance


def lose(node, seconds_offline: float) -> None:
    """The node's heartbeat timed out ``seconds_offline`` ago (and it was marked offline)."""
    timeout = settings.GPUFLEET_HEARTBEAT_TIMEOUT
    node.last_heartbeat = timezone.now() - timedelta(seconds=timeout + seconds_offline)
    node.status = NodeStatus.OFFLINE
    node.save()


def housekeeping(capture) -> None:
    with capture(execute=True):
        supervisor.fleet_housekeeping()


def replicas_of(deployment: Deployment) -> list[Instance]:
    return actions.live_instances(deployment)


def replacement_of(instance: Instance) -> Instance | None:
    return Instance.objects.filter(replaces=instance).first()
