"""The fleet's Prometheus series in the DCGM exporter's names and labels, so existing
DCGM dashboards and alerts work on gpufleet's readings; plus a few gauges of our own.
Served at /metrics with the other apps' series by ``config.metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.units import MIB
from inventory.choices import NodeStatus
from inventory.models import Gpu, Node

GPU_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname"]

# name, help (as dcgm-exporter's default counters word it), value from a GPU row
DCGM_GAUGES: tuple[tuple[str, str, Callable[[Gpu], float | None]], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda g: g.utilization),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", lambda g: g.memory_used // MIB),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", lambda g: g.memory_free // MIB),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda g: g.temperature),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda g: g.power_draw),
)


def gpu_labels(gpu: Gpu) -> list[str]:
    return [str(gpu.index), gpu.uuid, f"nvidia{gpu.index}", gpu.name, gpu.node.name]


def reporting_gpus(now: datetime) -> list[Gpu]:
    """GPUs the probe sees and whose last reading is recent (a silent agent drops out)."""
    cutoff = now - timedelta(seconds=settings.GPUFLEET_HEARTBEAT_TIMEOUT)
    return list(Gpu.objects.select_related("node").filter(present=True, sampled_at__gte=cutoff))


class FleetCollector(Collector):
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or timezone.now()

    def collect(self) -> Iterator[Metric]:
        gpus = reporting_gpus(self.now)
        for name, help_text, value_of in DCGM_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=GPU_LABELS)
            for gpu in gpus:
                value = value_of(gpu)
                if value is not None:
                    family.add_metric(gpu_labels(gpu), value)
            yield family
        yield self.gpu_enabled(gpus)
        yield self.node_up()

    def gpu_enabled(self, gpus: list[Gpu]) -> Metric:
        family = GaugeMetricFamily(
            "gpufleet_gpu_enabled", "1 if the GPU accepts new work in gpufleet.", labels=GPU_LABELS
        )
        for gpu in gpus:
            family.add_metric(gpu_labels(gpu), 1.0 if gpu.enabled else 0.0)
        return family

    def node_up(self) -> Metric:
        family = GaugeMetricFamily(
            "gpufleet_node_up",
            "1 unless the node's agent has missed its heartbeats.",
            labels=["Hostname"],
        )
        for name, status in Node.objects.values_list("name", "status"):
            family.add_metric([name], 0.0 if status == NodeStatus.OFFLINE else 1.0)
        return family


def unauthorized() -> HttpResponse:
    response = HttpResponse(
        "Unauthorized: send 'Authorization: Bearer <token>'.\n",
        status=401,
        content_type="text/plain; charset=utf-8",
    )
    response["WWW-Authenticate"] = 'Bearer realm="gpufleet"'
    return response
