"""Gpu.free_for_placement: ``min(total - reserved - claimed - foreign, observed_free -
reserved)``, never below zero."""

from __future__ import annotations

import pytest

from core.units import GIB
from inventory.models import Gpu
from scheduling.models import Deployment, GpuClaim, Instance
from tests.factories import CatalogModelFactory, GpuFactory

pytestmark = pytest.mark.django_db


def gpu(total: int, used: int, reserved: int | None = None) -> Gpu:
    return GpuFactory(memory_total=total, memory_used=used, reserved_override=reserved)


def claim(on: Gpu, size: int, server_pid: int | None = None) -> GpuClaim:
    deployment = Deployment.objects.create(model=CatalogModelFactory(), served_name=f"d{size}")
    instance = Instance.objects.create(
        deployment=deployment, state="running", server_pid=server_pid
    )
    return GpuClaim.objects.create(
        instance=instance, gpu=on, position=0, estimated=size, claimed=size
    )


def test_it_is_the_free_memory_less_the_reserve():
    assert gpu(80 * GIB, 10 * GIB).free_for_placement == 69 * GIB  # 1 GiB default reserve


def test_a_per_gpu_reserve_overrides_the_default():
    assert gpu(24 * GIB, 0, reserved=4 * GIB).free_for_placement == 20 * GIB


def test_a_full_gpu_has_nothing_to_place_on():
    assert gpu(24 * GIB, 24 * GIB).free_for_placement == 0
    assert gpu(24 * GIB, 23 * GIB + 1).free_for_placement == 0


def test_claims_not_yet_in_use_count_as_well_as_foreign_memory():
    card = gpu(80 * GIB, 10 * GIB)  # 10 GiB used by a program that is not ours
    claim(card, 30 * GIB)  # placed, not started: not in the reading yet
    assert card.free_for_placement == (80 - 1 - 30 - 10) * GIB


def test_memory_our_backend_uses_is_not_counted_twice():
    card = gpu(80 * GIB, 12 * GIB)
    claim(card, 10 * GIB, server_pid=4242)
    card.processes = [{"pid": 4242, "memory_used": 10 * GIB}, {"pid": 7, "memory_used": GIB}]
    card.save()
    assert card.foreign_memory == 2 * GIB  # the reading less our process
    assert card.free_for_placement == (80 - 1 - 10 - 2) * GIB
