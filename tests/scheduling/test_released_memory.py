"""Memory a stopped backend gave back counts as free at once, not only after the next
GPU reading: a cold start right after an idle release or an eviction must not be
refused for memory that is already free."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.units import GIB
from inventory.probe.base import GpuReading, ProcessUsage
from inventory.telemetry import record_readings
from scheduling import lifecycle
from scheduling.fleet import gpu_view
from scheduling.models import Deployment, GpuClaim, Instance
from tests.factories import CatalogModelFactory, GpuFactory, NodeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def running():
    """A 24 GiB GPU read a second ago with our backend (pid 555) using 8 GiB on it."""
    gpu = GpuFactory(
        node=NodeFactory(name="node-a"), index=0, memory_total=24 * GIB, memory_used=9 * GIB,
        processes=[{"pid": 555, "memory_used": 8 * GIB, "name": "llama"}],
        sampled_at=timezone.now() - timedelta(seconds=1),
    )  # fmt: skip
    deployment = Deployment.objects.create(model=CatalogModelFactory(), served_name="m")
    instance = Instance.objects.create(
        deployment=deployment, node=gpu.node, state="stopping", server_pid=555, pid=554
    )
    GpuClaim.objects.create(instance=instance, gpu=gpu, position=0, estimated=8 * GIB,
                            claimed=8 * GIB)  # fmt: skip
    return gpu, instance


def test_a_stopped_backends_memory_is_free_before_the_next_reading(running):
    gpu, instance = running
    before = gpu_view(gpu)
    assert before.free == 24 * GIB - GIB - 9 * GIB  # reserved 1 GiB; 8 GiB ours + 1 GiB other
    assert lifecycle.do_mark_stopped(instance)
    gpu.refresh_from_db()
    after = gpu_view(gpu)
    assert after.free == before.free + 8 * GIB
    assert after.foreign == 1 * GIB, "the stale reading's process is not someone else's"


def test_the_next_reading_takes_over_what_was_given_back(running):
    gpu, instance = running
    lifecycle.do_mark_stopped(instance)
    reading = GpuReading(index=0, uuid=gpu.uuid, memory_used=GIB, memory_total=24 * GIB,
                         processes=(ProcessUsage(pid=9, memory_used=GIB, name="x"),))  # fmt: skip
    record_readings(gpu.node, [reading], timezone.now())
    gpu.refresh_from_db()
    assert gpu.released == 0
    assert gpu_view(gpu).free == 24 * GIB - GIB - GIB
