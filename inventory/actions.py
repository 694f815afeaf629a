"""State changes of nodes and GPUs. Each writes its rows and emits one event after commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core import events
from inventory import alerts
from inventory.choices import AlertKind, NodeStatus, Severity
from inventory.models import Gpu, MaintenanceWindow, Node
from inventory.presenters import gpu_row
from inventory.probe import GpuInfo

AGENT_VERSION = "0.1.0"
_PARKED = 10_000


@dataclass(frozen=True)
class HostFacts:
    cpu_count: int
    ram_total: int
    ram_available: int
    disk_free: dict[str, int]


@transaction.atomic
def do_register_node(name: str, address: str, devices: list[GpuInfo], message: str = "") -> Node:
    """Create or update the node and its GPUs (matched by NVML UUID)."""
    node, _ = Node.objects.select_for_update().get_or_create(
        name=name, defaults={"address": address}
    )
    before = _registration(node)
    node.address, node.probe_message, node.agent_version = address, message, AGENT_VERSION
    node.save(update_fields=["address", "probe_message", "agent_version"])
    seen = {d.uuid for d in devices}
    # Park every index first so that GPUs that swapped index never collide.
    parked = list(node.gpus.values_list("pk", "index"))
    for pk, index in parked:
        Gpu.objects.filter(pk=pk).update(index=_PARKED + index)
    for device in devices:
        _upsert_gpu(node, device)
    taken = {d.index for d in devices}
    for gpu in node.gpus.exclude(uuid__in=seen):
        original = gpu.index - _PARKED
        update: dict[str, Any] = {"present": False}
        if original not in taken:
            update["index"] = original
            taken.add(original)
        Gpu.objects.filter(pk=gpu.pk).update(**update)
    if _registration(node) != before:  # agents re-register every 30 s; mostly nothing changed
        events.send("node.status", node_id=str(node.pk))
    return node


def _registration(node: Node) -> tuple[Any, ...]:
    """What a registration can change and the overview shows: the node and its devices."""
    gpus = Gpu.objects.filter(node=node).order_by("uuid")
    fields = ("uuid", "index", "name", "memory_total", "driver_version", "cuda_version",
              "compute_capability", "power_limit", "present")  # fmt: skip
    return (
        Node.objects.filter(pk=node.pk)
        .values_list("address", "probe_message", "agent_version")
        .first(),
        list(gpus.values_list(*fields)),
    )


def _upsert_gpu(node: Node, device: GpuInfo) -> Gpu:
    fields: dict[str, Any] = {
        "node": node,
        "index": device.index,
        "name": device.name,
        "memory_total": device.memory_total,
        "driver_version": device.driver_version,
        "cuda_version": device.cuda_version,
        "compute_capability": device.compute_capability,
        "power_limit": device.power_limit,
        "present": True,
    }
    gpu, _ = Gpu.objects.update_or_create(uuid=device.uuid, defaults=fields)
    return gpu


@transaction.atomic
def do_heartbeat(node: Node, facts: HostFacts | None = None) -> Node:
    """Record that the agent is alive; an offline node comes back online."""
    now = timezone.now()
    update: dict[str, Any] = {"last_heartbeat": now}
    if facts is not None:
        update |= {
            "cpu_count": facts.cpu_count,
            "ram_total": facts.ram_total,
            "ram_available": facts.ram_available,
            "disk_free": facts.disk_free,
            "storage_roots": list(facts.disk_free),
        }
    Node.objects.filter(pk=node.pk).update(**update)
    node.refresh_from_db()
    if node.status == NodeStatus.OFFLINE and not _window_active(node, now):
        _transition(node, NodeStatus.OFFLINE, NodeStatus.ONLINE)
        alerts.clear_alert(alerts.node_offline_key(node))
    return node


def _window_active(node: Node, now: Any) -> bool:
    return MaintenanceWindow.objects.active(now).filter(node=node).exists()


def _transition(node: Node, source: str, target: str) -> bool:
    """Conditional UPDATE: safe when several agents check the same node at once."""
    changed = Node.objects.filter(pk=node.pk, status=source).update(status=target)
    if changed:
        node.status = target
        events.send("node.status", node_id=str(node.pk))
    return bool(changed)


def do_mark_stale_nodes_offline(now: Any = None) -> list[Node]:
    """Nodes whose heartbeat is older than ``GPUFLEET_HEARTBEAT_TIMEOUT`` go offline."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.GPUFLEET_HEARTBEAT_TIMEOUT)
    stale = Node.objects.filter(
        status__in=[NodeStatus.ONLINE, NodeStatus.DRAINING], last_heartbeat__lt=cutoff
    )
    marked = []
    for node in stale:
        with transaction.atomic():
            if _transition(node, node.status, NodeStatus.OFFLINE):
                age = int((now - node.last_heartbeat).total_seconds())
                alerts.raise_alert(
                    alerts.node_offline_key(node),
                    AlertKind.NODE_OFFLINE,
                    f"Node {node.name} is offline: no heartbeat for {age} s.",
                    severity=Severity.CRITICAL,
                    node=node,
                )
                marked.append(node)
    return marked


def do_apply_maintenance_windows(now: Any = None) -> None:
    """Drain ``GPUFLEET_DRAIN_BEFORE`` ahead of a window, enter maintenance when it
    starts; leave it (back to online, taking placements again) when the last one ends."""
    now = now or timezone.now()
    do_drain_before_windows(now)
    active = set(MaintenanceWindow.objects.active(now).values_list("node_id", flat=True))
    cutoff = now - timedelta(seconds=settings.GPUFLEET_HEARTBEAT_TIMEOUT)
    for node in Node.objects.filter(pk__in=active).exclude(status=NodeStatus.MAINTENANCE):
        with transaction.atomic():
            _transition(node, node.status, NodeStatus.MAINTENANCE)
            events.send("maintenance.changed")
    for node in Node.objects.filter(status=NodeStatus.MAINTENANCE).exclude(pk__in=active):
        fresh = node.last_heartbeat is not None and node.last_heartbeat >= cutoff
        with transaction.atomic():
            _transition(node, node.status, NodeStatus.ONLINE if fresh else NodeStatus.OFFLINE)
            events.send("maintenance.changed")


@transaction.atomic
def do_save_maintenance_window(window: MaintenanceWindow) -> MaintenanceWindow:
    """Create or change a window; the node's state follows at once."""
    window.full_clean()
    window.save()
    do_apply_maintenance_windows()
    events.send("maintenance.changed")
    return window


@transaction.atomic
def do_delete_maintenance_window(window: MaintenanceWindow) -> None:
    window.delete()
    do_apply_maintenance_windows()
    events.send("maintenance.changed")


def do_set_draining(node: Node, draining: bool) -> bool:
    """Drain an online node (no new placements; the housekeeper moves its instances,
    ``scheduling.replacing``) or put a draining one back online. False when the node
    was in another state."""
    source, target = (
        (NodeStatus.ONLINE, NodeStatus.DRAINING)
        if draining
        else (NodeStatus.DRAINING, NodeStatus.ONLINE)
    )
    with transaction.atomic():
        return _transition(node, source, target)


def do_drain_before_windows(now: Any = None) -> list[Node]:
    """Online nodes whose maintenance window starts within ``GPUFLEET_DRAIN_BEFORE``
    start draining, so their instances have moved when it starts."""
    now = now or timezone.now()
    soon = now + timedelta(seconds=settings.GPUFLEET_DRAIN_BEFORE)
    upcoming = MaintenanceWindow.objects.filter(starts_at__lte=soon, ends_at__gt=now)
    drained = []
    nodes = Node.objects.filter(status=NodeStatus.ONLINE, pk__in=upcoming.values("node_id"))
    for node in nodes:
        if do_set_draining(node, True):
            drained.append(node)
    return drained


GPU_EDITABLE = ("priority", "enabled", "reserved_override")


@transaction.atomic
def do_update_gpu_settings(gpu: Gpu, **changes: Any) -> Gpu:
    """Change priority / enabled / reserved memory through the model's rules.

    Raises ``ValidationError`` naming the field; nothing is written in that case."""
    unknown = set(changes) - set(GPU_EDITABLE)
    if unknown:
        raise ValidationError({name: "This field cannot be changed." for name in unknown})
    locked = Gpu.objects.select_for_update().select_related("node").get(pk=gpu.pk)
    for name, value in changes.items():
        setattr(locked, name, value)
    locked.full_clean()
    locked.save(update_fields=list(changes) or None)
    events.send("gpu.settings", node_id=str(locked.node_id), rows=[gpu_row(locked)])
    return locked


class NodeNotOffline(Exception):
    """A node that was to be removed only while offline is not (any more): its agent
    reported since the caller looked. The message is for people."""


def lock_node_for_removal(node: Node, *, only_offline: bool = False) -> Node | None:
    """Inside the removal's transaction: the node's row, locked so that a heartbeat waits
    until the removal commits (then finds no row); None when it is already gone. With
    ``only_offline``, NodeNotOffline unless it is still offline at this moment."""
    locked = Node.objects.select_for_update().filter(pk=node.pk).first()
    if locked is not None and only_offline and locked.status != NodeStatus.OFFLINE:
        raise NodeNotOffline(
            f"Node {locked.name} is {locked.status}: only an offline node can be removed "
            "(drain it to move its instances, then stop its agent)."
        )
    return locked
