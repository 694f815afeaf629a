"""Gpu.free_for_placement: what a new backend may use, never below zero."""

from __future__ import annotations

from inventory.models import Gpu

GIB = 1024**3


def gpu(total: int, used: int, reserved: int | None = None) -> Gpu:
    return Gpu(memory_total=total, memory_used=used, reserved_override=reserved)


def test_it_is_the_free_memory_less_the_reserve():
    assert gpu(80 * GIB, 10 * GIB).free_for_placement == 69 * GIB  # 1 GiB default reserve


def test_a_per_gpu_reserve_overrides_the_default():
    assert gpu(24 * GIB, 0, reserved=4 * GIB).free_for_placement == 20 * GIB


def test_a_full_gpu_has_nothing_to_place_on():
    assert gpu(24 * GIB, 24 * GIB).free_for_placement == 0
    assert gpu(24 * GIB, 23 * GIB + 1).free_for_placement == 0
