"""Failover and drain: instances replaced on other nodes when theirs is lost or draining.

A replacement is a new pending instance of the same deployment whose ``replaces`` names
the instance it stands in for; the normal placement pass puts it on another node (a
download first where that node lacks the file: ``preparing.do_prepare_start``). An
instance and its live replacement count as one replica (``counted``): reconcile, idle
release and the gateway's demand see no surplus while both exist.

The housekeeper runs ``do_replace_pass`` every fleet pass; each step is idempotent:

- **Failover**: the instances of a node offline for longer than
  ``GPUFLEET_FAILOVER_AFTER`` (counted from when its heartbeat timed out) get a
  replacement. The lost instances stay ``unreachable`` and keep their claims on the lost
  node (it may come back). Placed instances that had not started move at once.
- **Drain**: the starting and running instances of a node that is draining (or in
  maintenance) get a replacement; the old one keeps serving. Placed instances that had
  not started move at once. The node takes no new placements (``Node.accepts_work``).
- **Settle** (the rule for extras): once a replacement is ``running``, the instance it
  replaces is stopped: make before break, and a returning node's backend is the one
  stopped. If the replaced instance runs on a node that takes work again (it came back,
  was undrained, its window ended) while its replacement is not yet running, the
  replacement is stopped instead. Either way the instance that serves stays: no gap.
- **Never more replacements than missing replicas**: the deployment's row is locked
  (``select_for_update``; SQLite: one writer at a time) while its instances are counted,
  and a unique constraint allows one replacement row per instance.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from inventory.choices import MOVING_AWAY, NodeStatus
from inventory.models import Node
from scheduling import events, lifecycle
from scheduling.choices import DesiredState, InstanceState
from scheduling.models import Deployment, Instance

logger = logging.getLogger("gpufleet.scheduling")
S = InstanceState
LEAVING = (S.STOPPING, S.STOPPED)
SERVING = (S.STARTING, S.RUNNING)  # drained: replaced first, stopped once that runs
UNSTARTED = (S.SCHEDULED, S.WAITING_FOR_FILES)  # nothing serves yet: moved at once
NOT_SERVING = (S.PENDING, S.FAILED, *UNSTARTED)


# --- counting ------------------------------------------------------------------------------


def has_live_replacement() -> Exists:
    return Exists(Instance.objects.filter(replaces=OuterRef("pk")).exclude(state__in=LEAVING))


def counted(instances: QuerySet[Instance]) -> QuerySet[Instance]:
    """Those that count as replicas: not leaving, and not replaced by a live instance."""
    return instances.exclude(state__in=LEAVING).filter(~has_live_replacement())


# --- which nodes ---------------------------------------------------------------------------


def lost_nodes(now: datetime | None = None) -> QuerySet[Node]:
    """Offline for longer than ``GPUFLEET_FAILOVER_AFTER``: offline since its last
    heartbeat plus ``GPUFLEET_HEARTBEAT_TIMEOUT``."""
    now = now or timezone.now()
    after = settings.GPUFLEET_HEARTBEAT_TIMEOUT + settings.GPUFLEET_FAILOVER_AFTER
    stale = Q(last_heartbeat__isnull=True) | Q(last_heartbeat__lt=now - timedelta(seconds=after))
    return Node.objects.filter(status=NodeStatus.OFFLINE).filter(stale)


def draining_nodes() -> QuerySet[Node]:
    return Node.objects.filter(status__in=MOVING_AWAY)


# --- the passes ----------------------------------------------------------------------------


def do_replace_pass(now: datetime | None = None) -> list[Instance]:
    """Failover, drain, settle: the housekeeper's part (``supervisor.fleet_housekeeping``)."""
    made = do_failover(now)
    made += do_drain()
    do_settle()
    return made


def do_failover(now: datetime | None = None) -> list[Instance]:
    """Replace the instances of nodes lost for longer than the failover delay."""
    nodes = list(lost_nodes(now))
    return _replace_on(nodes, (S.UNREACHABLE,), "its node {node} is offline")


def do_drain() -> list[Instance]:
    """Replace the serving instances of draining nodes (and nodes in maintenance)."""
    return _replace_on(list(draining_nodes()), SERVING, "its node {node} is draining")


def _replace_on(nodes: list[Node], states: Iterable[str], why: str) -> list[Instance]:
    made: list[Instance] = []
    for node in nodes:
        reason = why.format(node=node.name)
        _unplace(node, reason)
        candidates = (
            Instance.objects.filter(node=node, state__in=states)
            .filter(deployment__desired_state=DesiredState.RUNNING)
            .filter(~has_live_replacement())
        )
        by_deployment: dict[Any, set[Any]] = defaultdict(set)
        for deployment_id, pk in candidates.values_list("deployment_id", "pk"):
            by_deployment[deployment_id].add(pk)
        for deployment_id, ids in by_deployment.items():
            made += replace(deployment_id, ids, reason)
    return made


def _unplace(node: Node, reason: str) -> None:
    for instance in Instance.objects.filter(node=node, state__in=UNSTARTED):
        lifecycle.do_unplace(instance, f"Moved: {reason}.")


def replace(deployment_id: Any, candidates: set[Any], why: str) -> list[Instance]:
    """Replacements for those of ``candidates`` that still count as replicas, never more
    than the deployment misses once they are left out. Safe to run twice at once."""
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update()
            .filter(pk=deployment_id, desired_state=DesiredState.RUNNING)
            .first()
        )
        if deployment is None:
            return []
        live = list(counted(deployment.instances.all()).order_by("created_at"))
        old = [instance for instance in live if instance.pk in candidates]
        room = max(deployment.wanted_replicas - (len(live) - len(old)), 0)
        made = [new for instance in old[:room] if (new := _replacement(instance, why))]
        if made:
            events.instances_changed(made)
            events.deployment_changed(deployment)
            logger.info("%s: %d replacement(s): %s", deployment, len(made), why)
    return made


def _replacement(old: Instance, why: str) -> Instance | None:
    # An ended replacement (cancelled, stopped) no longer holds the unique slot.
    Instance.objects.filter(replaces=old, state__in=LEAVING).update(replaces=None)
    try:
        with transaction.atomic():
            return Instance.objects.create(
                deployment_id=old.deployment_id,
                replaces=old,
                pending_since=timezone.now(),
                reason=f"Replaces {old.short_id}: {why}.",
            )
    except IntegrityError:  # another pass made it meanwhile
        return None


def do_settle() -> int:
    """Apply the rule for extras to every replaced instance and its live replacement;
    returns how many instances were stopped."""
    pairs = (
        Instance.objects.filter(replaces__isnull=False)
        .exclude(state__in=LEAVING)
        .exclude(replaces__state__in=LEAVING)
        .select_related("replaces__node", "node", "deployment")
    )
    return sum(_settle(new.replaces, new) for new in pairs if new.replaces is not None)


def _settle(old: Instance, new: Instance) -> bool:
    if new.state == S.RUNNING:
        where = new.node.name if new.node else "another node"
        return _stop(old, f"Replaced by {new.short_id}, running on {where}.")
    if old.state in NOT_SERVING:
        return _stop(old, f"Replaced by {new.short_id} (this one was not serving).")
    if old.state == S.RUNNING and old.node is not None and old.node.accepts_work:
        where = old.node.name
        return _stop(new, f"Not needed: {old.short_id} serves again on {where}.", False)
    return False


def _stop(instance: Instance, note: str, with_replaced: bool = True) -> bool:
    with transaction.atomic():
        stopped = lifecycle.do_request_stop(instance, with_replaced=with_replaced)
        if stopped:
            Instance.objects.filter(pk=instance.pk).update(reason=note)
    if stopped:
        logger.info("stopped %s: %s", instance, note)
    return stopped


# --- what a draining node still holds ------------------------------------------------------


def drain_report(node: Node) -> list[dict[str, Any]]:
    """The instances still on ``node`` and where each one's move stands (plain data, for
    the node page and the API): ``moving`` (a replacement is placed or starting),
    ``stuck`` (its replacement fits nowhere: the reason says why), ``waiting`` (no
    replacement yet: the next pass makes one, unless the deployment has enough)."""
    rows = list(
        Instance.objects.filter(node=node)
        .exclude(state__in=(*LEAVING, S.FAILED))
        .select_related("deployment")
        .order_by("created_at")
    )
    replacements = {
        new.replaces_id: new
        for new in Instance.objects.filter(replaces__in=rows)
        .exclude(state__in=LEAVING)
        .select_related("node")
    }
    return [_report_row(instance, replacements.get(instance.pk)) for instance in rows]


def _report_row(instance: Instance, new: Instance | None) -> dict[str, Any]:
    if new is None:
        status, reason = "waiting", "No replacement yet."
    elif new.state in (S.PENDING, S.FAILED):
        status, reason = "stuck", new.reason or "Its replacement waits for placement."
    else:
        where = new.node.name if new.node else "another node"
        status, reason = "moving", f"Replacement {new.short_id} is {new.state} on {where}."
    return {
        "instance_id": str(instance.pk),
        "short_id": instance.short_id,
        "deployment_id": str(instance.deployment_id),
        "deployment": instance.deployment.served_name,
        "state": str(instance.state),
        "replacement_id": str(new.pk) if new else None,
        "replacement_state": str(new.state) if new else None,
        "status": status,
        "reason": reason,
    }
