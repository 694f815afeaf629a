"""OOM risk: raised and cleared live per GPU, and per instance over its estimate."""

from __future__ import annotations

import pytest

from core.units import GIB
from inventory.choices import AlertKind
from inventory.models import Alert
from inventory.presenters import gpu_row
from scheduling import oom
from scheduling.models import Deployment, GpuClaim, Instance
from tests.factories import CatalogModelFactory, GpuFactory, NodeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def card():
    return GpuFactory(node=NodeFactory(name="node-a"), index=0, memory_used=GIB // 2)


def claim(gpu, size: int, state: str = "running", measured: int | None = None) -> GpuClaim:
    name = f"d{Deployment.objects.count()}"
    deployment = Deployment.objects.create(model=CatalogModelFactory(), served_name=name)
    instance = Instance.objects.create(deployment=deployment, state=state, node=gpu.node)
    return GpuClaim.objects.create(
        instance=instance, gpu=gpu, position=0, estimated=size, claimed=measured or size,
        measured=measured,
    )  # fmt: skip


def active(kind: AlertKind) -> list[Alert]:
    return list(Alert.objects.active().filter(kind=kind))


def test_a_gpu_whose_claims_and_foreign_use_pass_the_threshold_warns(card):
    claim(card, 60 * GIB)
    oom.check_node(card.node)
    assert not active(AlertKind.OOM_RISK)
    card.memory_used = 12 * GIB  # someone else's 11.5 GiB on top of our 60 (not yet in use)
    card.save()
    oom.check_node(card.node)
    (alert,) = active(AlertKind.OOM_RISK)
    assert alert.gpu == card and "GPU 0 on node-a" in alert.message
    assert gpu_row(card)["oom_risk"] is True


def test_the_warning_clears_when_memory_is_released(card):
    big = claim(card, 75 * GIB)
    oom.check_node(card.node)
    assert active(AlertKind.OOM_RISK)
    big.instance.delete()
    oom.check_node(card.node)
    assert not active(AlertKind.OOM_RISK)
    assert Alert.objects.filter(kind=AlertKind.OOM_RISK, cleared_at__isnull=False).exists()


def test_an_instance_using_more_than_its_estimate_plus_the_margin_warns(card, settings):
    settings.GPUFLEET_PLACEMENT_MARGIN = 256 * 1024**2
    within = claim(card, 8 * GIB, measured=8 * GIB + 100 * 1024**2)
    over = claim(card, 8 * GIB, measured=9 * GIB)
    oom.check_node(card.node)
    (alert,) = active(AlertKind.ESTIMATE_EXCEEDED)
    assert alert.key == oom.estimate_key(over) != oom.estimate_key(within)
    assert "uses 9.00 GiB" in alert.message or "9.0" in alert.message
    over.instance.delete()
    oom.check_node(card.node)
    assert not active(AlertKind.ESTIMATE_EXCEEDED)


def test_the_gpu_page_shows_claims_by_instance_and_the_oom_risk(viewer_client, card):
    from django.urls import reverse

    claim(card, 75 * GIB)
    page = viewer_client.get(reverse("inventory:gpu", args=[card.pk])).content.decode()
    assert "Memory for placement" in page
    assert "OOM risk" in page
    assert "76,800 MiB" in page  # the claim, estimated and claimed


def _stopped_run(gpu, seconds_ago: float, pid: int = 4242):
    from datetime import timedelta

    from django.utils import timezone

    from scheduling.models import InstanceRun

    instance = claim(gpu, GIB, state="stopped").instance
    return InstanceRun.objects.create(
        instance=instance, number=1, node=gpu.node, log_path="/tmp/x.log", server_pid=pid,
        ended_at=timezone.now() - timedelta(seconds=seconds_ago),
    )  # fmt: skip


def test_memory_a_stopped_backend_still_holds_after_30_s_raises_an_alert(card):
    run = _stopped_run(card, seconds_ago=45)
    card.processes = [{"pid": 4242, "memory_used": GIB, "name": "llama_cpp.server"}]
    card.save()
    oom.check_node(card.node)
    (alert,) = active(AlertKind.MEMORY_NOT_RELEASED)
    assert "still holds memory on GPU 0" in alert.message
    card.processes = []
    card.save()
    oom.check_node(card.node)
    assert not active(AlertKind.MEMORY_NOT_RELEASED), "cleared once it is given back"
    assert run.pk


def test_memory_is_given_time_to_come_back_after_a_stop(card):
    _stopped_run(card, seconds_ago=5)
    card.processes = [{"pid": 4242, "memory_used": GIB, "name": "llama_cpp.server"}]
    card.save()
    oom.check_node(card.node)
    assert not active(AlertKind.MEMORY_NOT_RELEASED)
