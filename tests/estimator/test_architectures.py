"""What the estimator reads from gemma2, gemma3, phi3 and qwen2moe files (their graphs
are checked against llama.cpp in test_against_llama_cpp.py, over the matrix)."""

from __future__ import annotations

import pytest

from models_app.estimator import RunSettings, estimate
from models_app.estimator.context import context_params, reserve_spec
from models_app.estimator.matrix import ARCHES
from models_app.estimator.shape import prepare


@pytest.mark.parametrize("arch", ["gemma2", "gemma3", "phi3", "qwen2moe"])
def test_these_architectures_are_estimated_exactly(make_facts, arch: str) -> None:
    result = estimate(make_facts(**ARCHES[arch]), RunSettings(n_ctx=1024))

    assert prepare(make_facts(**ARCHES[arch])).exact
    assert not result.reasons


@pytest.mark.parametrize(("arch", "swa"), [("gemma2", [1, 0, 1, 0]), ("gemma3", [1] * 5 + [0])])
def test_sliding_window_layers_follow_llama_cpps_default_pattern(
    make_facts, arch: str, swa: list[int]
) -> None:
    shape = prepare(make_facts(**ARCHES[arch]))

    assert [int(layer.swa) for layer in shape.layers] == swa


def test_gemma3_attends_to_its_own_sliding_window_cache_without_swa_full(make_facts) -> None:
    shape = prepare(make_facts(**ARCHES["gemma3"]))  # window 256
    settings = RunSettings(n_ctx=8192, n_ubatch=512, swa_full=False)

    spec = reserve_spec(shape, settings, context_params(settings))
    full = estimate(shape, RunSettings(n_ctx=8192, n_ubatch=512))
    small = estimate(shape, settings)

    assert (spec.n_kv, spec.n_kv_swa) == (8192, 768)  # pad(256 + 512, 256)
    per_cell = 2 * 128 * 2  # K and V, one KV head of 128, f16
    assert small.cpu.kv_cache == per_cell * (8192 + 5 * 768)
    assert full.cpu.kv_cache == per_cell * 6 * 8192
    assert small.cpu.compute < full.cpu.compute


def test_phi3s_sliding_window_is_switched_off_as_llama_cpp_does(make_facts) -> None:
    shape = prepare(make_facts(**ARCHES["phi3"]))  # the file says 2047

    assert shape.n_swa == 0
    assert not shape.has_swa
    assert all(layer.fused_qkv for layer in shape.layers)


def test_qwen2moe_reads_its_shared_expert(make_facts) -> None:
    shape = prepare(make_facts(**ARCHES["qwen2moe"]))

    assert {(layer.n_ff, layer.n_ff_shexp) for layer in shape.layers} == {(160, 704)}
    assert not shape.traits.moe_norm_w
