"""What the estimator reads from gemma2, gemma3, phi3, qwen2moe, deepseek2, glm4moe and
gpt-oss files (their graphs
are checked against llama.cpp in test_against_llama_cpp.py, over the matrix)."""

from __future__ import annotations

import pytest

from devtools.estimator_matrix import ARCHES
from models_app.estimator import CacheType, EstimatorError, RunSettings, estimate, ggml
from models_app.estimator.compute import cuda_compute_size
from models_app.estimator.context import context_params, pad, reserve_spec
from models_app.estimator.shape import prepare


@pytest.mark.parametrize(
    "arch",
    ["gemma2", "gemma3", "phi3", "qwen2moe", "deepseek2-lite", "deepseek2", "glm4moe", "gpt-oss"],
)
def test_these_architectures_are_estimated_exactly(make_facts, arch: str) -> None:
    result = estimate(make_facts(**ARCHES[arch]), RunSettings(n_ctx=1024))

    assert prepare(make_facts(**ARCHES[arch])).exact
    assert not result.reasons


@pytest.mark.parametrize(
    ("arch", "swa"),
    [("gemma2", [1, 0, 1, 0]), ("gemma3", [1] * 5 + [0]), ("gpt-oss", [1, 0, 1, 0])],
)
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


@pytest.mark.parametrize(("arch", "q_lora"), [("deepseek2-lite", 0), ("deepseek2", 96)])
def test_deepseek2_reads_its_latent_attention_and_leading_dense_layer(
    make_facts, arch: str, q_lora: int
) -> None:
    shape = prepare(make_facts(**ARCHES[arch]))

    assert shape.mla is not None
    assert (shape.mla.q_lora_rank, shape.mla.kv_lora_rank, shape.mla.n_rot) == (q_lora, 160, 64)
    assert (shape.mla.head_k, shape.mla.head_v) == (192, 128)
    assert (shape.head_dim_k, shape.n_head_kv_max) == (160 + 64, 1)  # the one cached head
    assert [layer.moe for layer in shape.layers] == [False, True, True]
    n_ff_exp, n_shared = ARCHES[arch]["n_ff_exp"], ARCHES[arch]["n_expert_shared"]
    assert [layer.n_ff_shexp for layer in shape.layers] == [0, *[n_ff_exp * n_shared] * 2]


def test_deepseek2_gating_follows_its_keys(make_facts) -> None:
    lite = prepare(make_facts(**ARCHES["deepseek2-lite"])).traits
    full = prepare(make_facts(**ARCHES["deepseek2"])).traits

    assert (lite.moe_gating, lite.moe_norm_w, lite.moe_w_scale) == ("softmax", False, False)
    assert (full.moe_gating, full.moe_norm_w, full.moe_w_scale) == ("sigmoid", True, True)


def test_an_mla_cache_holds_k_only(make_facts) -> None:
    """V is a view of K's first kv_lora_rank values: no V tensor, one row of 224 per cell."""
    facts = make_facts(**ARCHES["deepseek2-lite"])

    result = estimate(
        facts,
        RunSettings(n_ctx=4096, type_k=CacheType.Q8_0, type_v=CacheType.Q8_0, flash_attn=True),
    )

    assert result.cpu.kv_cache == 3 * 4096 * (224 // 32 * 34)


def test_an_mla_model_refuses_different_k_and_v_cache_types(make_facts) -> None:
    facts = make_facts(**ARCHES["deepseek2"])

    with pytest.raises(EstimatorError, match="different K and V"):
        estimate(facts, RunSettings(n_ctx=1024, type_k=CacheType.Q8_0))


def test_glm4moe_reads_its_dense_lead_shared_expert_and_sigmoid_gating(make_facts) -> None:
    shape = prepare(make_facts(**ARCHES["glm4moe"]))

    assert [layer.moe for layer in shape.layers] == [False, True, True]
    assert [(layer.n_ff, layer.n_ff_shexp) for layer in shape.layers] == [
        (768, 0),
        (192, 192),
        (192, 192),
    ]
    assert all(layer.qkv_bias for layer in shape.layers)
    traits = shape.traits
    assert (traits.moe_gating, traits.moe_norm_w, traits.moe_w_scale) == ("sigmoid", True, True)
    assert traits.ffn_norm == "post_attention_norm"
    assert shape.mla is None and not shape.has_swa


def test_gpt_oss_reads_its_sinks_biases_and_mxfp4_experts(make_facts) -> None:
    shape = prepare(make_facts(**ARCHES["gpt-oss"]))

    assert shape.n_swa == 128
    assert {layer.n_ff for layer in shape.layers} == {256}
    assert all(layer.qkv_bias and layer.out_bias and layer.moe for layer in shape.layers)
    assert shape.weight_types["blk.0.ffn_up_exps.weight"] == "MXFP4"
    assert shape.weight_types["blk.0.attn_sinks.weight"] == "F32"
    assert (shape.traits.moe_gating, shape.traits.late_out_ids) == ("softmax_weight", True)


@pytest.mark.parametrize("arch", ["deepseek2", "glm4moe"])
def test_multi_token_prediction_blocks_are_left_out_as_llama_cpp_does(
    make_facts, arch: str
) -> None:
    """block_count 4 with nextn_predict_layers 1: three decoder layers; llama.cpp loads
    none of blk.3's tensors, caches nothing for it and builds no graph for it."""
    facts = make_facts(**ARCHES[arch])
    shape = prepare(facts)

    assert facts.block_count == 4
    assert (shape.n_layer, len(shape.layers), shape.exact) == (3, 3, True)
    assert not [weight.name for weight in shape.weights if weight.name.startswith("blk.3.")]


def test_cuda_flash_attention_converts_an_mla_cache_once() -> None:
    """ggml-cuda's F16 copy of a quantized K serves V too when V is a view of K."""
    cache = ggml.external("Q8_0", (224, 256, 1), "k0")
    k = ggml.view(cache, (224, 1, 256, 1), cache.nb[1:])
    v = ggml.view(cache, (160, 1, 256, 1), cache.nb[1:])
    q = ggml.new_tensor("F32", (224, 32, 4, 1))
    attn = ggml.flash_attn_ext(q, k, v, None)
    separate = ggml.flash_attn_ext(q, k, ggml.view(ggml.external("Q8_0", v.ne, "v0"), v.ne), None)

    converted_k = 2 * 224 * 256
    assert cuda_compute_size(attn) == pad(attn.nbytes, 128) + converted_k
    assert cuda_compute_size(separate) > cuda_compute_size(attn)
