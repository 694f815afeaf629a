"""Per-instance gauges for gpufleet's ``/metrics``, from the readings the agents keep in
``Instance.readings`` (``scheduling.readings``): read from the database at scrape time,
one query, never per request. Only running instances with readings appear (a
llama-cpp-python backend has none)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scheduling.choices import InstanceState
from scheduling.models import Instance
from scheduling.presenters import readings_data

# "instance" is the label Prometheus gives the scrape target: ours is instance_id.
LABELS = ["served_name", "instance_id", "node"]

# name, help, value from the checked readings (None: left out)
GAUGES: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("gpufleet_instance_slots", "Parallel slots of the backend.", lambda r: r["slots"]),
    (
        "gpufleet_instance_slots_busy",
        "Slots processing a request.",
        lambda r: r["busy"],
    ),
    (
        "gpufleet_instance_requests_deferred",
        "Requests the backend holds until a slot is free.",
        lambda r: r["deferred"],
    ),
    (
        "gpufleet_instance_tokens_per_second",
        "Tokens generated per second (the backend's own counters, over the last reading interval).",
        lambda r: r["tokens_per_second"],
    ),
    (
        "gpufleet_instance_kv_used_ratio",
        "Share of the backend's KV cache cells that hold tokens (0..1).",
        lambda r: r["kv_used"],
    ),
)


def instance_readings() -> list[tuple[list[str], dict[str, Any]]]:
    """(labels, checked readings) of every running instance that has readings."""
    rows = Instance.objects.filter(state=InstanceState.RUNNING).exclude(readings={})
    rows = rows.select_related("deployment", "node").order_by("deployment__served_name", "pk")
    found = []
    for instance in rows:
        data = readings_data(instance)
        if data is not None:
            node = instance.node.name if instance.node else ""
            found.append(([instance.deployment.served_name, str(instance.pk), node], data))
    return found


class InstanceCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        found = instance_readings()
        for name, help_text, value_of in GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=LABELS)
            for labels, data in found:
                value = value_of(data)
                if value is not None:
                    family.add_metric(labels, float(value))
            yield family
