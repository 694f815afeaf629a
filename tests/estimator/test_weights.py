"""Weight buffers per device: mmap spans, the CPU repack buffer, CUDA padding."""

from __future__ import annotations

from gguf import GGMLQuantizationType as Q

from models_app.estimator import GpuDevice, RunSettings, estimate
from models_app.estimator.settings import HostProfile
from models_app.estimator.shape import prepare
from models_app.estimator.weights import cuda_alloc_size, repackable

ONE = [GpuDevice("CUDA0", 1 << 34)]
NO_REPACK = HostProfile(repack_types=frozenset())


def _span(weights) -> int:
    return max(w.offset + w.nbytes for w in weights) - min(w.offset for w in weights)


def test_mmap_maps_the_span_of_the_cpu_tensors(make_facts) -> None:
    shape = prepare(make_facts(weight_type=Q.F16))

    result = estimate(shape, RunSettings(n_ctx=256))

    assert result.cpu.buffers == {
        "CPU_Mapped model": _span(shape.weights),
        "CPU KV": result.cpu.kv_cache,
        "CPU compute": result.cpu.compute,
        "CPU output": result.cpu.output,
    }


def test_q4_0_matrices_are_repacked_and_still_inside_the_mapped_span(make_facts) -> None:
    shape = prepare(make_facts(weight_type=Q.Q4_0, n_embd=128, n_ff=256))
    packed = [w for w in shape.weights if repackable(w, HostProfile().repack_types)]
    rest = [w for w in shape.weights if w not in packed]

    buffers = estimate(shape, RunSettings(n_ctx=256)).cpu.buffers

    assert {w.name for w in packed} >= {"blk.0.attn_q.weight", "output.weight"}
    assert "token_embd.weight" not in {w.name for w in packed}  # used by GET_ROWS
    assert buffers["CPU_REPACK model"] == sum(w.nbytes for w in packed)
    assert buffers["CPU_Mapped model"] == _span(rest)


def test_q8_0_is_not_repacked_on_x86(make_facts) -> None:
    shape = prepare(make_facts(weight_type=Q.Q8_0))

    assert "CPU_REPACK model" not in estimate(shape, RunSettings(n_ctx=256)).cpu.buffers


def test_without_mmap_host_weights_are_allocated_with_32_byte_padding(make_facts) -> None:
    shape = prepare(make_facts(weight_type=Q.F32, n_embd=96, n_head=3, n_head_kv=1))
    settings = RunSettings(n_ctx=256, use_mmap=False, host=NO_REPACK)

    buffers = estimate(shape, settings).cpu.buffers

    assert buffers["CPU model"] == sum((w.nbytes + 31) // 32 * 32 for w in shape.weights)


def test_with_a_gpu_nothing_is_repacked_and_unmapped_host_weights_are_pinned(make_facts) -> None:
    shape = prepare(make_facts(weight_type=Q.Q4_0))
    settings = RunSettings(n_ctx=256, n_gpu_layers=1, use_mmap=False)

    buffers = estimate(shape, settings, ONE).cpu.buffers

    assert "CPU_REPACK model" not in buffers
    assert buffers["CUDA_Host model"] > 0


def test_cuda_pads_quantized_rows_to_512_values(make_facts) -> None:
    shape = prepare(make_facts(weight_type=Q.Q8_0, n_embd=128, n_ff=256))
    attn_q = next(w for w in shape.weights if w.name == "blk.0.attn_q.weight")
    norm = next(w for w in shape.weights if w.name == "blk.0.attn_norm.weight")

    # 128 values per row: 384 more values of padding, one partial q8_0 row of 12 blocks
    assert cuda_alloc_size(attn_q) == attn_q.nbytes + 12 * 34
    assert cuda_alloc_size(norm) == norm.nbytes  # F32: no padding


def test_offloaded_layers_leave_the_cpu_mapping(make_facts) -> None:
    shape = prepare(make_facts(weight_type=Q.F16, n_layer=4))

    full = estimate(shape, RunSettings(n_ctx=256), ONE)

    embd = next(w for w in shape.weights if w.name == "token_embd.weight")
    assert full.cpu.weights == embd.nbytes  # only the input layer stays
    others = [w for w in shape.weights if w is not embd]
    assert full.device("CUDA0").weights == sum((w.nbytes + 127) // 128 * 128 for w in others)
