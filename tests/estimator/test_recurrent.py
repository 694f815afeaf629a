"""Hybrids with recurrent state (lfm2): what the estimator reads from the file, the
state memory and the reserved graph (the figures are checked against llama.cpp over the
matrix in test_against_llama_cpp.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q

from core.units import MIB
from devtools.estimator_matrix import ARCHES
from devtools.llama_harness import compare, format_table, measure
from devtools.tiny_gguf import write_tiny_model
from models_app.estimator import CacheType, GpuDevice, RunSettings, estimate
from models_app.estimator.context import context_params, reserve_spec
from models_app.estimator.forward import build_graph
from models_app.estimator.shape import prepare
from models_app.gguf import load_model_facts
from scheduling.backend_logs import parse_log

LFM2 = ARCHES["lfm2"]  # 6 layers, attention in 2 and 4, n_embd 256, 3 taps
GRANITE = ARCHES["granite-hybrid"]  # 6 layers, attention in 2, d_inner 512, 8 SSM heads
STATE_ROW = 256 * 2 * 4  # n_embd x (l_cache - 1) F32 values: one sequence's conv state


def test_lfm2_is_estimated_exactly_with_its_short_convolution_layers(make_facts) -> None:
    shape = prepare(make_facts(**LFM2))

    assert shape.exact and not estimate(shape, RunSettings(n_ctx=1024)).reasons
    assert [layer.recurrent for layer in shape.layers] == [True, True, False, True, False, True]
    assert shape.recurrent is not None
    assert (shape.recurrent.d_conv, shape.recurrent.n_embd_r, shape.recurrent.n_embd_s) == (
        2,
        512,
        0,
    )


def test_granite_hybrid_is_estimated_exactly_with_its_mamba2_layers(make_facts) -> None:
    shape = prepare(make_facts(**GRANITE))

    assert shape.exact and not estimate(shape, RunSettings(n_ctx=1024)).reasons
    assert [layer.recurrent for layer in shape.layers] == [True, True, False, True, True, True]
    state = shape.recurrent
    assert state is not None and state.kind == "mamba2"
    # conv: 3 x (d_inner 512 + 2 x 1 group x d_state 128); SSM: d_state x d_inner
    assert (state.n_embd_r, state.n_embd_s) == (3 * (512 + 256), 128 * 512)
    assert (shape.traits.rope, shape.traits.residual_scale, shape.traits.logit_scale) == (
        False,
        True,
        True,
    )


def test_granite_hybrid_with_experts_reads_them_and_its_shared_expert(make_facts) -> None:
    shape = prepare(make_facts(**ARCHES["granite-hybrid-moe"]))

    assert shape.exact
    assert {(layer.moe, layer.n_ff, layer.n_ff_shexp) for layer in shape.layers} == {
        (True, 128, 192)
    }
    assert (shape.traits.moe_gating, shape.traits.moe_norm_w) == ("softmax", True)


def test_granite_hybrids_state_holds_the_conv_and_the_ssm_state_per_sequence(make_facts) -> None:
    result = estimate(make_facts(**GRANITE), RunSettings(n_ctx=2048, n_seq_max=3))

    per_sequence = (3 * (512 + 256) + 128 * 512) * 4
    assert result.cpu.buffers["CPU RS"] == 5 * 3 * per_sequence  # 5 Mamba-2 layers


def test_lfm2s_output_norm_is_named_token_embd_norm_and_belongs_to_the_output(make_facts) -> None:
    shape = prepare(make_facts(**LFM2))

    (norm,) = [weight for weight in shape.weights if weight.name == "token_embd_norm.weight"]
    assert (norm.layer, norm.op) == (shape.n_layer, "MUL")


@pytest.mark.parametrize("unified", [False, True])
def test_the_state_is_one_row_per_sequence_and_only_attention_layers_have_kv(
    make_facts, unified: bool
) -> None:
    settings = RunSettings(n_ctx=4096, n_seq_max=4, kv_unified=unified, flash_attn=True)

    result = estimate(make_facts(**LFM2), settings)

    state = 4 * 4 * STATE_ROW  # 4 recurrent layers x 4 sequences
    kv = 2 * 2 * 4096 * 64 * 2  # 2 attention layers, K and V, 4096 cells, one KV head of 64
    assert result.cpu.buffers["CPU RS"] == state
    assert result.cpu.buffers["CPU KV"] == kv
    assert result.cpu.kv_cache == kv + state


def test_a_transposed_v_cache_is_not_made_for_recurrent_layers(make_facts) -> None:
    """Without flash attention V is padded to the widest layer, but still only for the
    layers the hybrid's attention cache holds."""
    result = estimate(make_facts(**LFM2), RunSettings(n_ctx=512, type_k=CacheType.Q8_0))

    k = 2 * 512 * 64 // 32 * 34
    v = 2 * 512 * 64 * 2
    assert result.cpu.buffers["CPU KV"] == k + v


def test_the_state_lives_with_its_layer_on_a_gpu_or_on_the_cpu_without_kv_offload(
    make_facts,
) -> None:
    facts = make_facts(**LFM2)
    gpus = [GpuDevice("CUDA0", 8 << 30)]

    offloaded = estimate(facts, RunSettings(n_ctx=1024, n_gpu_layers=4), gpus)
    kept = estimate(facts, RunSettings(n_ctx=1024, n_gpu_layers=99, offload_kqv=False), gpus)

    # 4 of 7 (layers 3 to 5 and the output) on the GPU: recurrent layers 3 and 5 there,
    # 0 and 1 on the CPU; each state tensor padded to 128 bytes on CUDA (already a multiple)
    assert offloaded.devices[0].buffers["CUDA0 RS"] == 2 * STATE_ROW
    assert offloaded.cpu.buffers["CPU RS"] == 2 * STATE_ROW
    assert "CUDA0 RS" not in kept.devices[0].buffers
    assert kept.cpu.buffers["CPU RS"] == 4 * STATE_ROW


def test_the_reserved_graph_convolves_each_sequences_tokens_with_its_state(make_facts) -> None:
    shape = prepare(make_facts(**LFM2))
    settings = RunSettings(n_ctx=2048, n_seq_max=4, n_ubatch=512)
    spec = reserve_spec(shape, settings, context_params(settings))

    graph = build_graph(shape, spec, range(shape.n_layer))

    convs = [node for node in graph.nodes if node.op == "SSM_CONV"]
    states = [n for n in graph.nodes if n.op == "GET_ROWS" and n.src[0].view_src is not None]
    states = [state for state in states if state.src[0].view_src.external]  # of a state tensor
    assert spec.n_seqs == 4
    assert [conv.ne[:3] for conv in convs] == [(256, 128, 4)] * 4  # 512 tokens in 4 sequences
    assert {state.ne[:2] for state in states if state.ne[1]} == {(512, 4)}


def test_lfm2_with_sliding_window_attention_is_an_upper_bound_with_its_state(make_facts) -> None:
    facts = make_facts(**{**LFM2, "sliding_window": 128})
    settings = RunSettings(n_ctx=1024, n_seq_max=2)

    shape = prepare(facts)
    result = estimate(facts, settings)

    assert not shape.exact and shape.recurrent is None
    assert "sliding-window" in " ".join(result.reasons)
    exact = estimate(make_facts(**LFM2), settings)
    assert result.cpu.kv_cache > exact.cpu.kv_cache  # every layer cached, plus the state
    assert result.cpu.compute > exact.cpu.compute


def test_the_recurrent_state_buffer_counts_as_kv_cache_in_llama_cpps_log() -> None:
    log = "\n".join(
        [
            "llama_kv_cache:        CPU KV buffer size =     0.25 MiB",
            "llama_memory_recurrent:        CPU RS buffer size =     0.03 MiB",
        ]
    )

    reported = parse_log(log)

    assert reported.component("kv_cache") == round(0.25 * MIB) + round(0.03 * MIB)


def test_without_a_recurrent_layer_lfm2_is_all_attention(make_facts) -> None:
    shape = prepare(make_facts(**{**LFM2, "n_head_kv": (1,) * 6}))

    result = estimate(shape, RunSettings(n_ctx=512, flash_attn=True))

    assert not any(layer.recurrent for layer in shape.layers)
    assert "CPU RS" not in result.cpu.buffers
    assert result.cpu.buffers["CPU KV"] == 6 * 2 * 512 * 64 * 2


needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (the estimator is checked against it)",
)


# variants of the matrix's hybrids: the last layer attention, untied output, RoPE and
# no multipliers (granite), two SSM groups, embeddings on (lfm2 then makes no logits)
VARIANTS = {
    "lfm2-attention-last": (
        {**LFM2, "n_layer": 4, "n_head_kv": (1, 0, 0, 1), "tied_embeddings": False},
        RunSettings(n_ctx=3000, n_seq_max=3, n_ubatch=300),
    ),
    "lfm2-unified-fa": (
        {**LFM2, "n_layer": 4, "n_head_kv": (2, 0, 2, 0)},
        RunSettings(n_ctx=2500, n_seq_max=2, kv_unified=True, flash_attn=True),
    ),
    "lfm2-embeddings": (
        {**LFM2, "n_layer": 4, "n_head_kv": (0, 0, 1, 0)},
        RunSettings(n_ctx=1000, n_seq_max=2, embeddings=True, pooling="mean"),
    ),
    "granite-rope-untied-attention-last": (
        {
            **GRANITE,
            "n_layer": 4,
            "n_head_kv": (0, 1, 0, 2),
            "rope": True,
            "residual_scale": None,
            "logit_scale": None,
            "tied_embeddings": False,
        },
        RunSettings(n_ctx=1800, n_seq_max=2, n_ubatch=256, flash_attn=True),
    ),
    "granite-two-groups": (
        {**GRANITE, "n_layer": 3, "n_head_kv": (0, 1, 0), "ssm_n_group": 2, "ssm_d_state": 64},
        RunSettings(n_ctx=5000, n_seq_max=4, kv_unified=True, n_ubatch=1024),
    ),
    "granite-embeddings": (  # granite does make logits then: a vocabulary big enough to tell
        {**GRANITE, "n_layer": 3, "n_head_kv": (0, 1, 0), "n_vocab": 8000},
        RunSettings(n_ctx=700, n_seq_max=2, embeddings=True, pooling="last"),
    ),
}


@needs_llama_cpp
@pytest.mark.parametrize("variant", VARIANTS)
def test_hybrids_match_llama_cpp_to_the_logged_precision(tmp_path: Path, variant: str) -> None:
    spec, settings = VARIANTS[variant]
    (path,) = write_tiny_model(tmp_path / "hybrid.gguf", weight_type=Q.Q8_0, **spec)

    (reported,) = measure([(path, settings)])

    assert reported.error is None, reported.error
    rows = compare(estimate(load_model_facts(path), settings), reported)
    assert all(row.within for row in rows), format_table(rows)
    assert all(abs(row.error) <= row.resolution for row in rows if row.component == "compute")
