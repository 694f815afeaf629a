"""Eviction in a placement pass: when an instance fits nowhere, stop idle instances of
lower-priority deployments (the pure rule is ``scheduling.eviction``) and let a later
pass place it once their memory is back.

Idle: the gateway saw no request for ``GPUFLEET_EVICT_IDLE_AFTER`` (it marks instances
with requests in flight every 2 s, so a busy instance is never idle). While instances
stopped for room are still stopping, an instance that would fit once they are gone
waits instead of evicting more.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from scheduling import events, lifecycle
from scheduling.choices import InstanceState
from scheduling.eviction import Candidate, choose
from scheduling.models import MAX_REPLICAS, Deployment, Eviction, Instance, InstanceRun
from scheduling.placement import NodeView, Request, Sizer

logger = logging.getLogger("gpufleet.scheduling")
S = InstanceState


def _reload_seconds(instance: Instance) -> float | None:
    run = (
        InstanceRun.objects.filter(
            instance__deployment=instance.deployment_id, ready_at__isnull=False
        )
        .order_by("-ready_at")
        .values_list("started_at", "ready_at")
        .first()
    )
    if run is None or run[1] is None:
        return None
    return (run[1] - run[0]).total_seconds()


def _candidate(instance: Instance, now: datetime, spare: int, idle_after: float) -> Candidate:
    idle = instance.idle_seconds(now)
    return Candidate(
        instance_id=str(instance.pk),
        deployment_id=str(instance.deployment_id),
        served_name=instance.deployment.served_name,
        node_id=str(instance.node_id),
        priority=instance.deployment.priority,
        idle_seconds=idle,
        reload_seconds=_reload_seconds(instance),
        gpu_bytes={str(c.gpu_id): c.claimed for c in instance.claims.all()},
        host_bytes=instance.host_bytes,
        in_flight=0 if idle >= idle_after else 1,
        above_min=spare > 0,
        spare=max(spare, 0),
    )


def candidates(priority: int, now: datetime | None = None) -> list[Candidate]:
    """Running instances of deployments of lower priority than ``priority``."""
    now = now or timezone.now()
    rows = list(
        Instance.objects.filter(state=S.RUNNING, deployment__priority__lt=priority)
        .select_related("deployment")
        .prefetch_related("claims")
    )
    live = Counter(
        Instance.objects.filter(deployment_id__in={i.deployment_id for i in rows})
        .exclude(state__in=(S.STOPPING, S.STOPPED))
        .values_list("deployment_id", flat=True)
    )
    idle_after = settings.GPUFLEET_EVICT_IDLE_AFTER
    return [
        _candidate(i, now, live[i.deployment_id] - i.deployment.min_replicas, idle_after)
        for i in rows
    ]


def _leaving() -> list[Candidate]:
    """Instances on their way out, as if already gone (their memory comes back soon)."""
    rows = Instance.objects.filter(state=S.STOPPING).select_related("deployment")
    now = timezone.now()
    return [
        _candidate(i, now, MAX_REPLICAS, 0.0)
        for i in rows.prefetch_related("claims")
        if i.node_id is not None
    ]


def try_eviction(
    instance: Instance, nodes: list[NodeView], request: Request, sizer: Sizer
) -> str | None:
    """After placement refused ``instance``: stop what makes room (recording why), or
    say it waits for instances already stopping. The reason to show, or None."""
    deployment = instance.deployment
    leaving = _leaving()
    if leaving and choose(nodes, request, sizer, leaving, priority=10**6, max_sets=64):
        return "Waiting for stopping instances to give their memory back."
    chosen = choose(nodes, request, sizer, candidates(deployment.priority), deployment.priority)
    if chosen is None:
        return None
    for candidate, line in zip(chosen.evicted, chosen.lines(deployment.served_name), strict=True):
        _evict(candidate, line, instance)
    names = ", ".join(sorted({c.served_name for c in chosen.evicted}))
    return f"Stopping idle {names} (lower priority) to make room; it starts then."


def _evict(candidate: Candidate, line: str, for_instance: Instance) -> None:
    victim = Instance.objects.select_related("deployment").get(pk=candidate.instance_id)
    if not lifecycle.do_request_stop(victim):
        return
    Instance.objects.filter(pk=victim.pk).update(reason=f"Evicted: {line}.")
    Deployment.objects.filter(pk=victim.deployment_id, demand__gt=0).update(demand=F("demand") - 1)
    Eviction.objects.create(
        evicted_id=victim.deployment_id, evicted_instance=victim,
        for_deployment_id=for_instance.deployment_id, for_instance=for_instance, text=line,
    )  # fmt: skip
    events.deployment_changed(victim.deployment)
    logger.info("eviction: %s", line)


def recent(deployment: Deployment, limit: int = 10, within: timedelta | None = None) -> list[Any]:
    """The evictions a deployment's page lists: those it suffered and those it caused."""
    rows = Eviction.objects.filter(evicted=deployment) | Eviction.objects.filter(
        for_deployment=deployment
    )
    if within is not None:
        rows = rows.filter(at__gte=timezone.now() - within)
    return list(rows.order_by("-at")[:limit])
