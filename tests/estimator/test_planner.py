"""The inverse planner: most GPU layers that fit, longest context that fits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.units import MIB
from models_app.estimator import (
    DEFAULT_GPU_OVERHEAD_BYTES,
    GpuDevice,
    RunSettings,
    estimate,
    max_context,
    max_gpu_layers,
    prepare,
)

SETTINGS = RunSettings(n_ctx=2048, flash_attn=True)


@pytest.fixture
def shape(make_facts):
    return prepare(
        make_facts(n_layer=8, n_embd=256, n_head=4, n_head_kv=2, n_ff=1024, n_vocab=2000)
    )


def _gpu_need(shape, n_gpu_layers: int) -> int:
    probe = [GpuDevice("CUDA0", 1 << 40)]
    return (
        estimate(shape, replace(SETTINGS, n_gpu_layers=n_gpu_layers), probe).device("CUDA0").total
    )


def test_everything_is_offloaded_when_the_gpu_is_big(shape) -> None:
    plan = max_gpu_layers(shape, SETTINGS, [GpuDevice("CUDA0", 1 << 40)])

    assert plan.fits
    assert plan.n_gpu_layers == shape.n_layer + 1


def test_it_finds_the_largest_layer_count_that_fits(shape) -> None:
    margin = 4 * MIB
    free = _gpu_need(shape, 5) + margin  # exactly room for 5 of the 9 layers

    plan = max_gpu_layers(shape, SETTINGS, [GpuDevice("CUDA0", free)], margin_bytes=margin)

    assert plan.fits and plan.n_gpu_layers == 5
    assert plan.estimate.device("CUDA0").total + margin <= free
    assert _gpu_need(shape, 6) + margin > free


def test_two_gpus_get_a_split_that_fits_them_both(shape) -> None:
    need = _gpu_need(shape, shape.n_layer + 1) - DEFAULT_GPU_OVERHEAD_BYTES
    gpus = [
        GpuDevice("CUDA0", DEFAULT_GPU_OVERHEAD_BYTES + need * 3 // 4),
        GpuDevice("CUDA1", DEFAULT_GPU_OVERHEAD_BYTES + need // 2),
    ]

    plan = max_gpu_layers(shape, SETTINGS, gpus)

    assert plan.fits
    for device in plan.estimate.devices:
        assert device.free_bytes is None or device.total <= device.free_bytes


def test_nothing_fits_below_the_fixed_overhead(shape) -> None:
    plan = max_gpu_layers(shape, SETTINGS, [GpuDevice("CUDA0", DEFAULT_GPU_OVERHEAD_BYTES // 2)])

    assert not plan.fits
    assert plan.n_gpu_layers == 0


def test_it_finds_the_longest_context_that_fits(shape) -> None:
    gpus = [GpuDevice("CUDA0", _gpu_need(shape, shape.n_layer + 1) + 64 * MIB)]
    settings = RunSettings(n_seq_max=2, flash_attn=True)

    plan = max_context(shape, settings, gpus, limit=1 << 20)

    assert plan.fits
    assert plan.n_ctx % 512 == 0  # 256 per sequence
    assert plan.estimate.fits()
    assert not estimate(shape, replace(settings, n_ctx=plan.n_ctx + 512), gpus).fits()


def test_a_cpu_only_context_needs_a_host_budget(shape) -> None:
    with pytest.raises(ValueError, match="host_free_bytes"):
        max_context(shape, SETTINGS)

    plan = max_context(shape, SETTINGS, host_free_bytes=64 * MIB, limit=1 << 20)

    assert plan.fits and plan.estimate.cpu.total <= 64 * MIB
