"""``manage.py fleet``: the fleet as the database knows it, like ``nvidia-smi``.

Per node a header (status, heartbeat age, address), then one line per GPU. ``--json``
prints the same as machine-readable data; ``--node NAME`` shows one node.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from core.units import MIB
from inventory.choices import NodeStatus
from inventory.history import format_duration
from inventory.models import Gpu, Node
from inventory.presenters import gpu_row, gpu_state

NAME_WIDTH = 26
NO_NODES = (
    "No nodes are registered yet. Start an agent on each GPU machine "
    "(manage.py agent --node NAME); a machine without an NVIDIA driver registers CPU-only."
)
HEADER = f"  {'GPU':>3}  {'Name':<{NAME_WIDTH}}  {'Util':>4}  {'Memory used / total':>22}  "
HEADER += f"{'Temp':>5}  {'Power':>11}  {'Prio':>4}  State"


def gpu_report(gpu: Gpu) -> dict[str, Any]:
    row = gpu_row(gpu)
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "utilization": gpu.utilization,
        "memory_used": gpu.memory_used,
        "memory_total": gpu.memory_total,
        "temperature": gpu.temperature,
        "power_draw": gpu.power_draw,
        "power_limit": gpu.power_limit,
        "priority": gpu.priority,
        "enabled": gpu.enabled,
        "state": gpu_state(row),
        "error": gpu.error,
        "sampled_at": gpu.sampled_at.isoformat() if gpu.sampled_at else None,
    }


def node_report(node: Node, now: datetime) -> dict[str, Any]:
    age = node.heartbeat_age(now)
    return {
        "name": node.name,
        "id": str(node.pk),
        "status": node.status,
        "address": node.address,
        "heartbeat_age_s": None if age is None else round(age, 1),
        "probe_message": node.probe_message,
        "gpus": [gpu_report(gpu) for gpu in node.gpus.all()],
    }


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_gpu(gpu: dict[str, Any]) -> str:
    memory = f"{gpu['memory_used'] // MIB:,} / {gpu['memory_total'] // MIB:,} MiB"
    temp = "–" if gpu["temperature"] is None else f"{gpu['temperature']:.0f}°C"
    power = (
        "–" if gpu["power_draw"] is None else f"{gpu['power_draw']:.0f}/{gpu['power_limit']:.0f} W"
    )
    state = gpu["state"] + (f" ({gpu['error']})" if gpu["error"] else "")
    return (
        f"  {gpu['index']:>3}  {_fit(gpu['name'], NAME_WIDTH):<{NAME_WIDTH}}  "
        f"{gpu['utilization']:>3.0f}%  {memory:>22}  {temp:>5}  {power:>11}  "
        f"{gpu['priority']:>4}  {state}"
    )


def format_node(node: dict[str, Any], paint: Callable[[str, str], str]) -> list[str]:
    age = node["heartbeat_age_s"]
    heartbeat = "no heartbeat yet" if age is None else f"heartbeat {format_duration(age)} ago"
    status = paint(node["status"], node["status"].upper())
    lines = [f"{node['name']}  {status}  {heartbeat}  {node['address']}"]
    if not node["gpus"]:
        message = node["probe_message"] or "No GPUs found."
        return [*lines, f"  no GPUs (CPU-only): {message}"]
    return [*lines, HEADER, *(format_gpu(gpu) for gpu in node["gpus"])]


class Command(BaseCommand):
    help = "Show every node and GPU like nvidia-smi (from the database the agents fill)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--node", metavar="NAME", help="show only this node")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            reports = self._reports(options["node"])
        except DatabaseError as exc:
            raise CommandError(
                f"Cannot read the fleet from the database ({exc}). Has 'manage.py migrate' run?"
            ) from exc
        if options["json"]:
            self.stdout.write(json.dumps({"nodes": reports}, indent=2))
        elif not reports:
            self.stdout.write(NO_NODES)
        else:
            blocks = ["\n".join(format_node(node, self._paint)) for node in reports]
            self.stdout.write("\n\n".join(blocks))

    def _reports(self, name: str | None) -> list[dict[str, Any]]:
        nodes = Node.objects.prefetch_related("gpus").order_by("name")
        if name is not None:
            nodes = nodes.filter(name=name)
            if not nodes:
                known = ", ".join(Node.objects.values_list("name", flat=True)) or "none"
                raise CommandError(f"No node named {name!r} (known nodes: {known}).")
        now = timezone.now()
        return [node_report(node, now) for node in nodes]

    def _paint(self, status: str, text: str) -> str:
        styles: dict[str, Callable[[str], str]] = {
            NodeStatus.ONLINE.value: self.style.SUCCESS,
            NodeStatus.OFFLINE.value: self.style.ERROR,
        }
        return styles.get(status, self.style.WARNING)(text)
