"""The estimate as a whole: components per device, totals, the working, approximations."""

from __future__ import annotations

import json
from dataclasses import replace

from gguf import GGMLQuantizationType as Q

from models_app.estimator import (
    COMPONENTS,
    DEFAULT_GPU_OVERHEAD_BYTES,
    GpuDevice,
    RunSettings,
    estimate,
    prepare,
)

GPUS = [GpuDevice("CUDA0", 8 << 30), GpuDevice("CUDA1", 8 << 30)]


def test_a_cpu_only_estimate_has_one_device_and_no_overhead(make_facts) -> None:
    result = estimate(make_facts(), RunSettings(n_ctx=512))

    assert [device.device for device in result.devices] == ["CPU"]
    assert result.cpu.overhead == 0
    assert result.total == sum(result.cpu.component(name) for name in COMPONENTS)
    assert not result.approximate


def test_every_gpu_gets_the_overhead_and_its_own_figures(make_facts) -> None:
    result = estimate(make_facts(n_layer=4), RunSettings(n_ctx=512), GPUS)

    assert [device.device for device in result.devices] == ["CUDA0", "CUDA1", "CPU"]
    for name in ("CUDA0", "CUDA1"):
        gpu = result.device(name)
        assert gpu.overhead == DEFAULT_GPU_OVERHEAD_BYTES
        assert gpu.weights > 0 and gpu.kv_cache > 0 and gpu.compute > 0
        assert gpu.output == 0
    assert result.cpu.output > 0  # logits land in host memory
    assert result.gpu_total == result.device("CUDA0").total + result.device("CUDA1").total


def test_it_shows_its_working_for_every_figure(make_facts) -> None:
    result = estimate(make_facts(n_layer=4), RunSettings(n_ctx=1000, n_seq_max=2), GPUS)

    text = result.explain()

    assert "n_ctx 1000 -> 1024 cells" in text
    assert "token embeddings on the CPU" in text
    assert "CUDA0: layers 0-2" in text
    for device in result.devices:
        shown = {
            item.component: item.bytes
            for item in result.explanation
            if item.device == device.device
        }
        assert shown["weights"] == device.weights
        assert shown["kv_cache"] == device.kv_cache
        assert shown["compute"] == device.compute
        assert shown["total"] == device.total
    assert "high-water mark set by" in text


def test_flash_attention_shrinks_the_compute_buffer(make_facts) -> None:
    facts = make_facts(n_embd=256, n_head=8, n_head_kv=2)

    plain = estimate(facts, RunSettings(n_ctx=8192))
    flash = estimate(facts, RunSettings(n_ctx=8192, flash_attn=True))

    # without flash attention the KQ matrix alone is 8192 x 512 x 8 heads x 4 bytes
    assert plain.cpu.compute >= 8192 * 512 * 8 * 4
    assert flash.cpu.compute < plain.cpu.compute / 4


def test_an_unknown_architecture_gets_an_upper_bound_and_says_so(make_facts) -> None:
    known = make_facts(weight_type=Q.Q8_0)
    facts = replace(known, architecture="mystery")

    result = estimate(facts, RunSettings(n_ctx=512))
    llama = estimate(known, RunSettings(n_ctx=512))

    assert result.approximate
    assert result.reasons[0].startswith("upper bound: 'mystery' has no exact graph")
    assert result.cpu.weights == llama.cpu.weights
    assert result.cpu.kv_cache == llama.cpu.kv_cache
    assert result.cpu.compute >= 1.5 * llama.cpu.compute


def test_fits_compares_gpu_totals_with_free_memory(make_facts) -> None:
    facts = make_facts(n_layer=4)
    small = [GpuDevice("CUDA0", DEFAULT_GPU_OVERHEAD_BYTES + (1 << 20))]

    assert estimate(facts, RunSettings(n_ctx=256), GPUS).fits(margin_bytes=1 << 20)
    assert not estimate(facts, RunSettings(n_ctx=8192), small).fits()


def test_the_estimate_turns_into_json(make_facts) -> None:
    result = estimate(make_facts(), RunSettings(n_ctx=512), GPUS)

    data = json.loads(json.dumps(result.to_dict()))

    assert data["total"] == result.total
    assert data["devices"][0]["total"] == result.devices[0].total
    assert data["assignment"]["output_device"] == result.assignment.output_device


def test_qwen3_and_qwen3moe_are_estimated_exactly(make_facts) -> None:
    qwen3 = make_facts(arch="qwen3", n_embd=128, key_length=64)
    moe = make_facts(arch="qwen3moe", n_embd=128, key_length=64, n_expert=8, n_expert_used=2)

    for facts in (qwen3, moe):
        result = estimate(facts, RunSettings(n_ctx=512))
        assert not result.approximate, result.reasons


def test_moe_experts_are_as_wide_as_their_tensors_not_the_dense_feed_forward_length(
    make_facts,
) -> None:
    # Qwen3-30B-A3B: feed_forward_length 6144, experts 768 wide; llama.cpp sizes the experts'
    # activations by the tensors (expert_feed_forward_length), the estimate must as well
    facts = make_facts(arch="qwen3moe", n_embd=256, n_ff=64, n_expert=8, n_expert_used=2)
    dense = replace(facts, feed_forward_length=6144)
    settings = RunSettings(n_ctx=4096, n_ubatch=2048, n_batch=4096, flash_attn=True)

    assert facts.feed_forward_length == 128  # n_ff * n_expert_used, as the converter writes
    assert prepare(dense).layers[0].n_ff == 64
    assert estimate(dense, settings).cpu.compute == estimate(facts, settings).cpu.compute
