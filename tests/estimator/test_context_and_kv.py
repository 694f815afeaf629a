"""Context padding, KV cache sizes and the output buffer follow llama-context.cpp and
llama-kv-cache.cpp."""

from __future__ import annotations

from dataclasses import replace

import pytest

from models_app.estimator import CacheType, GpuDevice, RunSettings, estimate
from models_app.estimator.context import context_params, reserve_spec
from models_app.estimator.shape import prepare

Q8 = CacheType.Q8_0


@pytest.mark.parametrize(
    ("n_ctx", "n_seq", "unified", "expected"),
    [
        (256, 1, False, (256, 256)),
        (300, 1, False, (512, 512)),  # padded to a multiple of 256
        (4096, 4, False, (4096, 1024)),  # 1024 cells per sequence
        (1000, 2, False, (1024, 512)),  # 1024 / 2 = 512 per sequence
        (1000, 3, False, (1536, 512)),  # 1024 / 3 = 341 -> padded to 512, times 3
        (3000, 3, True, (3072, 3072)),  # unified: one cache of all cells
    ],
)
def test_it_pads_the_context_like_llama_cpp(
    n_ctx: int, n_seq: int, unified: bool, expected
) -> None:
    cparams = context_params(RunSettings(n_ctx=n_ctx, n_seq_max=n_seq, kv_unified=unified))

    assert (cparams.n_ctx, cparams.n_ctx_seq) == expected


def test_batch_sizes_are_capped_by_the_context() -> None:
    cparams = context_params(RunSettings(n_ctx=100, n_batch=2048, n_ubatch=512))

    assert (cparams.n_batch, cparams.n_ubatch, cparams.n_outputs_max) == (100, 100, 100)


def test_the_reserved_graph_rounds_tokens_up_to_a_multiple_of_the_sequences(make_facts) -> None:
    shape = prepare(make_facts())
    settings = RunSettings(n_ctx=2048, n_seq_max=3, n_ubatch=512)

    spec = reserve_spec(shape, settings, context_params(settings))

    assert (spec.n_tokens, spec.n_outputs, spec.n_stream, spec.n_kv) == (513, 512, 3, 768)


def test_kv_cache_is_row_size_times_cells_per_layer(make_facts) -> None:
    # n_embd 128, 4 heads of 32, 2 KV heads: n_embd_k_gqa = 64
    facts = make_facts(n_layer=3, n_embd=128, n_head=4, n_head_kv=2)

    result = estimate(facts, RunSettings(n_ctx=1024, n_seq_max=2))

    f16_row = 64 * 2
    assert result.cpu.kv_cache == 3 * 2 * f16_row * 1024


def test_a_q8_0_cache_uses_34_bytes_per_32_values(make_facts) -> None:
    facts = make_facts(n_layer=2, n_embd=128, n_head=4, n_head_kv=2)

    result = estimate(facts, RunSettings(n_ctx=512, type_k=Q8, type_v=Q8, flash_attn=True))

    q8_row = 64 // 32 * 34
    assert result.cpu.kv_cache == 2 * 2 * q8_row * 512


def test_a_quantized_v_cache_without_flash_attention_is_refused() -> None:
    with pytest.raises(ValueError, match="flash attention"):
        RunSettings(type_v=Q8)


def test_kv_cache_follows_its_layer_to_the_gpu(make_facts) -> None:
    facts = make_facts(n_layer=4, n_embd=128, n_head=4, n_head_kv=2)
    gpus = [GpuDevice("CUDA0", 1 << 30)]

    offloaded = estimate(facts, RunSettings(n_ctx=512, n_gpu_layers=2), gpus)
    kept = estimate(facts, RunSettings(n_ctx=512, n_gpu_layers=2, offload_kqv=False), gpus)

    per_layer = 2 * 64 * 2 * 512
    assert offloaded.device("CUDA0").kv_cache == per_layer  # layer 3 only
    assert offloaded.cpu.kv_cache == 3 * per_layer
    assert kept.device("CUDA0").kv_cache == 0
    assert kept.cpu.kv_cache == 4 * per_layer


def test_the_output_buffer_holds_one_row_of_logits_per_sequence(make_facts) -> None:
    facts = make_facts(n_vocab=1000)

    result = estimate(facts, RunSettings(n_ctx=512, n_seq_max=4))

    assert result.cpu.output == 1000 * 4 * 4


def test_n_ctx_zero_means_the_training_context(make_facts) -> None:
    facts = make_facts(n_ctx_train=1000)

    result = estimate(facts, RunSettings(n_ctx=0))

    assert (result.context.n_ctx, result.context.n_batch) == (1024, 1000)


def test_sliding_window_layers_get_a_smaller_cache_without_swa_full(make_facts) -> None:
    facts = replace(make_facts(n_layer=2, n_embd=128, n_head=4, n_head_kv=2), sliding_window=128)
    facts = replace(facts, architecture="windowed")  # llama and qwen2 ignore the window
    # the layout of an exact architecture with sliding-window layers (an inexact one
    # gets a bound: see the next test)
    shape = replace(prepare(facts), exact=True, notes=())

    full = estimate(shape, RunSettings(n_ctx=4096))
    small = estimate(shape, RunSettings(n_ctx=4096, swa_full=False, n_ubatch=256))

    per_cell = 2 * 2 * 64 * 2  # layers x (K + V) x n_embd_gqa x f16
    assert full.cpu.kv_cache == per_cell * 4096
    assert small.cpu.kv_cache == per_cell * 512  # pad(128 + n_ubatch 256, 256)


def test_an_inexact_architecture_counts_sliding_window_layers_at_full_size(make_facts) -> None:
    facts = replace(make_facts(n_layer=2, n_embd=128, n_head=4, n_head_kv=2), sliding_window=128)
    facts = replace(facts, architecture="windowed")

    small = estimate(facts, RunSettings(n_ctx=4096, swa_full=False, n_ubatch=256))

    assert small.cpu.kv_cache == 2 * 2 * 64 * 2 * 4096
    assert small.reasons[0].startswith("upper bound: 'windowed'")
