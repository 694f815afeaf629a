"""Deployments: create, scale, start, stop, delete, and the instances that follow them.

``reconcile`` makes a deployment's live instances match what it asks for (replicas,
desired state); placement runs after commit (``placement_pass``). Instance state changes
are in ``lifecycle``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core import events as live_events
from inventory.actions import lock_node_for_removal
from inventory.models import Gpu, Node
from models_app.models import CatalogModel
from scheduling import events, fleet, lifecycle, placement_pass, replacing
from scheduling.choices import DesiredState, InstanceState
from scheduling.deployment_fields import UPDATABLE
from scheduling.fleet import Fleet, request_for
from scheduling.models import Deployment, Instance
from scheduling.placement import Refusal
from scheduling.presenters import estimate_notes

S = InstanceState
ENDED = (S.STOPPED,)
LEAVING = (S.STOPPING, S.STOPPED)  # no longer counted as a replica
# Replicas beyond the wanted count are stopped in this order: not yet running first.
_STOP_FIRST = [S.PENDING, S.FAILED, S.SCHEDULED, S.WAITING_FOR_FILES, S.UNREACHABLE, S.STARTING]


def selection_errors(
    deployment: Deployment,
    only_gpus: Iterable[Any] | None = None,
    exclude_gpus: Iterable[Any] | None = None,
) -> dict[str, str]:
    """Why no instance of this deployment could ever be placed, by field (empty: fine)."""
    nodes = [
        view
        for view in Fleet.load().for_deployment(deployment)
        if all(view.labels.get(k) == v for k, v in deployment.node_labels.items())
    ]
    if not nodes:
        return {"node_labels": "No node has these labels."}
    if not any(view.has_model or view.can_download for view in nodes):
        return {"model": f"No node holds {deployment.model} or can download it."}
    if deployment.allow_cpu_offload:
        return {}
    request = request_for(deployment, only_gpus, exclude_gpus)
    usable = [
        gpu
        for view in nodes
        for gpu in view.gpus
        if gpu.enabled and gpu.present and gpu.id not in request.exclude_gpus
        if not request.only_gpus or gpu.id in request.only_gpus
    ]
    if not usable:
        return {"only_gpus": "The GPU selector matches no enabled GPU (and CPU offload is off)."}
    return {}


def validate(
    deployment: Deployment, only_gpus: Iterable[Gpu] = (), exclude_gpus: Iterable[Gpu] = ()
) -> None:
    """Every rule of the model, then whether anything could ever be placed."""
    deployment.full_clean(exclude=["only_gpus", "exclude_gpus"])
    errors = selection_errors(deployment, only_gpus, exclude_gpus)
    if errors:
        raise ValidationError(errors)


def do_create_deployment(
    user: Any = None,
    only_gpus: Iterable[Gpu] = (),
    exclude_gpus: Iterable[Gpu] = (),
    **fields: Any,
) -> Deployment:
    """Validate everything first (no half-created deployment), then create its replicas."""
    fields.setdefault("min_replicas", fields.get("replicas", 1))  # always on unless asked
    if not fields.get("kind") and isinstance(fields.get("model"), CatalogModel):
        fields["kind"] = fleet.default_kind(fields["model"])
    deployment = Deployment(**fields)
    if user is not None and getattr(user, "is_authenticated", False):
        deployment.created_by = user
    only, exclude = list(only_gpus), list(exclude_gpus)
    validate(deployment, only, exclude)
    with transaction.atomic():
        deployment.save(force_insert=True)
        deployment.only_gpus.set(only)
        deployment.exclude_gpus.set(exclude)
        reconcile(deployment)
        events.deployment_changed(deployment)
    return deployment


def live_instances(deployment: Deployment) -> list[Instance]:
    """Its replicas: instances not stopping or stopped; an instance being replaced
    (failover, drain) and its replacement count as one (``replacing.counted``)."""
    return list(replacing.counted(deployment.instances.all()).order_by("created_at"))


def reconcile(deployment: Deployment) -> None:
    """Create or stop instances so that the deployment has what it asks for."""
    live = live_instances(deployment)
    wanted = deployment.wanted_replicas
    if len(live) < wanted:
        now = timezone.now()
        Instance.objects.bulk_create(
            Instance(deployment=deployment, pending_since=now) for _ in range(wanted - len(live))
        )
        placement_pass.run_pass_after_commit(f"{deployment} needs replicas")
    for instance in _surplus(live, len(live) - wanted):
        lifecycle.do_request_stop(instance)
    if deployment.desired_state == DesiredState.DELETING:
        transaction.on_commit(lambda: _delete_if_done(deployment.pk))


def _surplus(live: list[Instance], count: int) -> list[Instance]:
    if count <= 0:
        return []
    rank = {state: position for position, state in enumerate(_STOP_FIRST)}
    ordered = sorted(
        live, key=lambda i: (rank.get(S(i.state), len(rank)), -i.created_at.timestamp())
    )
    return ordered[:count]


def _delete_if_done(deployment_id: Any) -> None:
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
        if deployment is None or deployment.desired_state != DesiredState.DELETING:
            return
        if deployment.instances.exclude(state__in=ENDED).exists():
            return
        events.deployment_changed(deployment)
        deployment.delete()


def do_update_deployment(
    deployment: Deployment,
    changes: dict[str, Any],
    only_gpus: Iterable[Gpu] | None = None,
    exclude_gpus: Iterable[Gpu] | None = None,
) -> Deployment:
    """Change settings, all checked first; pending instances are placed with them."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValidationError({name: "This setting cannot be changed." for name in unknown})
    for name, value in changes.items():
        setattr(deployment, name, value)
    only = list(deployment.only_gpus.all()) if only_gpus is None else list(only_gpus)
    exclude = list(deployment.exclude_gpus.all()) if exclude_gpus is None else list(exclude_gpus)
    validate(deployment, only, exclude)
    with transaction.atomic():
        deployment.save(update_fields=sorted(changes) or None)
        deployment.only_gpus.set(only)
        deployment.exclude_gpus.set(exclude)
        placement_pass.run_pass_after_commit(f"{deployment} changed")
        events.deployment_changed(deployment)
    return deployment


def do_scale(deployment: Deployment, replicas: int, min_replicas: int | None = None) -> Deployment:
    """Set the most instances it runs (and, given, the fewest). Without ``min_replicas``,
    an always-on deployment (min = replicas) stays always on; an on-demand one keeps its
    minimum, lowered to ``replicas`` if it was above."""
    if min_replicas is None:
        pinned = deployment.min_replicas == deployment.replicas
        min_replicas = replicas if pinned else min(deployment.min_replicas, replicas)
    deployment.replicas, deployment.min_replicas = replicas, min_replicas
    deployment.demand = min(deployment.demand, replicas)
    deployment.full_clean(exclude=["only_gpus", "exclude_gpus"])
    with transaction.atomic():
        Deployment.objects.filter(pk=deployment.pk).update(
            replicas=replicas, min_replicas=min_replicas, demand=deployment.demand
        )
        reconcile(deployment)
        events.deployment_changed(deployment)
    return deployment


def do_demand(deployment_id: Any, wanted: int) -> bool:
    """Traffic asks for ``wanted`` instances (the gateway's cold starts and scale-ups):
    raise ``demand`` to it (at most ``replicas``) and create what is missing; placement
    and start follow the normal path. Asking again for what is there changes nothing,
    so gateways asking at once start one instance, not one each: the deployment's row is
    locked while its instances are counted (SQLite: one writer at a time already)."""
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
        if deployment is None or deployment.desired_state != DesiredState.RUNNING:
            return False
        target = min(deployment.replicas, max(wanted, 0))
        if target > deployment.demand:
            Deployment.objects.filter(pk=deployment.pk).update(demand=target)
            deployment.demand = target
            events.deployment_changed(deployment)
        before = len(live_instances(deployment))
        reconcile(deployment)
        if deployment.instances.filter(state=S.PENDING).exists():
            # A fresh verdict for instances placement refused before (it runs after
            # commit, before this returns): the gateway answers waiting requests by it.
            placement_pass.run_pass_after_commit(f"{deployment} asked for by traffic")
    return len(live_instances(deployment)) > before


def do_note_waiting(waiting: dict[str, int]) -> None:
    """The gateway's count of requests held for a cold start, per deployment id (0: none
    left), for the pages' "cold start: N waiting, about T s"."""
    now = timezone.now()
    for deployment_id, count in waiting.items():
        rows = Deployment.objects.filter(pk=deployment_id).exclude(waiting=count)
        since: dict[str, Any] = {}
        if not count:
            since = {"waiting_since": None}
        elif Deployment.objects.filter(pk=deployment_id, waiting=0).exists():
            since = {"waiting_since": now}  # the first request of this cold start
        if rows.update(waiting=count, **since):
            events.deployment_changed(Deployment(pk=deployment_id))


def do_release_idle(now: Any = None) -> list[Instance]:
    """Stop running instances that served nothing for their deployment's ``idle_timeout``,
    keeping ``min_replicas``; the deployment's ``demand`` follows. The model file stays on
    the node (the next cold start needs no download)."""
    now = now or timezone.now()
    released: list[Instance] = []
    on_demand = Deployment.objects.filter(
        desired_state=DesiredState.RUNNING, min_replicas__lt=F("replicas")
    )
    for deployment in on_demand:
        live = live_instances(deployment)
        spare = max(len(live) - deployment.min_replicas, 0)
        idle = [i for i in live if i.state == S.RUNNING]
        idle = [i for i in idle if i.idle_seconds(now) >= deployment.idle_timeout]
        chosen = sorted(idle, key=lambda i: -i.idle_seconds(now))[:spare]
        for instance in chosen:
            note = f"Released after {instance.idle_seconds(now):.0f} s without requests."
            with transaction.atomic():
                if lifecycle.do_request_stop(instance):
                    Instance.objects.filter(pk=instance.pk).update(reason=note)
                    released.append(instance)
        if chosen:
            _lower_demand(deployment)
    return released


def _lower_demand(deployment: Deployment) -> None:
    running = len(live_instances(deployment))
    Deployment.objects.filter(pk=deployment.pk, demand__gt=running).update(demand=running)
    events.deployment_changed(deployment)


def do_set_desired(deployment: Deployment, desired: DesiredState) -> Deployment:
    if deployment.desired_state == DesiredState.DELETING:
        raise ValidationError({"desired_state": "This deployment is being deleted."})
    with transaction.atomic():
        Deployment.objects.filter(pk=deployment.pk).update(desired_state=desired)
        deployment.desired_state = desired
        reconcile(deployment)
        events.deployment_changed(deployment)
    return deployment


def do_delete_deployment(deployment: Deployment) -> None:
    """Stop every instance; the row goes when the last one has stopped."""
    with transaction.atomic():
        Deployment.objects.filter(pk=deployment.pk).update(desired_state=DesiredState.DELETING)
        deployment.desired_state = DesiredState.DELETING
        reconcile(deployment)
        events.deployment_changed(deployment)


def on_instance_ended(instance: Instance) -> None:
    """After an instance stopped: a deleting deployment may now go."""
    deployment = instance.deployment
    if deployment.desired_state == DesiredState.DELETING:
        transaction.on_commit(lambda: _delete_if_done(deployment.pk))


def do_remove_node(node: Node, *, only_offline: bool = False) -> list[Deployment]:
    """A node gone for good: its instances are deleted (their claims with them) and its
    deployments create what they now miss, placed on the other nodes. ``only_offline``:
    refused (``NodeNotOffline``) unless the node is offline once its row is locked."""
    with transaction.atomic():
        locked = lock_node_for_removal(node, only_offline=only_offline)
        if locked is None:
            return []  # removed by someone else meanwhile
        on_node = Instance.objects.filter(node=locked)
        deployment_ids = set(on_node.values_list("deployment_id", flat=True))
        on_node.delete()
        node_id = str(locked.pk)
        locked.delete()
        deployments = list(Deployment.objects.filter(pk__in=deployment_ids))
        for deployment in deployments:
            reconcile(deployment)
            events.deployment_changed(deployment)
        live_events.send("node.status", node_id=node_id)
    return deployments


# --- from placement to start ------------------------------------------------------------


def preview(
    deployment: Deployment,
    only_gpus: Iterable[Any] | None = None,
    exclude_gpus: Iterable[Any] | None = None,
) -> dict[str, Any]:
    """Where one replica would go now and why, claiming nothing (for the form and API)."""
    outcome = placement_pass.preview(deployment, only_gpus, exclude_gpus)
    notes = estimate_notes(deployment)
    if isinstance(outcome, Refusal):
        return {"fits": False, "reasons": list(outcome.reasons), "notes": notes}
    return {"fits": True, "placement": outcome, "notes": notes}
