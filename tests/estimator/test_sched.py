"""Graphs across several backends: splits, input copies, pipeline copies, op offload."""

from __future__ import annotations

import itertools

import pytest

from core.units import KIB
from models_app.estimator import GpuDevice, RunSettings, estimate, ggml, prepare
from models_app.estimator import compute as compute_module
from models_app.estimator.allocator import GraphAllocator
from models_app.estimator.context import context_params, reserve_spec
from models_app.estimator.layer_split import place_layers
from models_app.estimator.sched import schedule

GPU, CPU = 0, 1


def _two_backend_graph() -> ggml.Graph:
    graph = ggml.Graph()
    with ggml.on_device(CPU):
        x = ggml.new_input("F32", (256,), "x")  # 1 KiB on the CPU
    with ggml.on_device(GPU):
        a = ggml.cont(x)  # runs on the GPU: needs a copy of x there
        b = ggml.cont(a)
    graph.expand(b)
    return graph


def _sizes(graph: ggml.Graph) -> list[int]:
    allocator = GraphAllocator([128, 32], [lambda t: t.nbytes] * 2)
    return allocator.run(graph)


def test_a_tensor_used_on_another_backend_is_copied_there() -> None:
    graph = schedule(_two_backend_graph())

    gpu, cpu = _sizes(graph)

    assert cpu == 1 * KIB  # x
    assert gpu == 2 * KIB  # x's copy and a (b reuses the copy's place once it is freed)


def test_pipeline_parallelism_keeps_four_copies_of_inputs() -> None:
    graph = schedule(_two_backend_graph(), n_copies=4)

    gpu, cpu = _sizes(graph)

    assert cpu == 4 * KIB  # the input and its three extra copies, never freed
    assert gpu == 4 * KIB + 2 * KIB  # four copies of x, then a and b


def test_two_gpus_with_everything_offloaded_keep_extra_input_copies(make_facts) -> None:
    facts = make_facts(n_layer=4, n_embd=256, n_head=4, n_head_kv=2)
    one = [GpuDevice("CUDA0", 1 << 34)]
    two = [*one, GpuDevice("CUDA1", 1 << 34)]
    settings = RunSettings(n_ctx=4096)

    single = estimate(facts, settings, one)
    pipelined = estimate(facts, settings, two)

    assert pipelined.cpu.compute > single.cpu.compute  # the mask etc. in four copies
    assert set(pipelined.cpu.buffers) >= {"CUDA_Host compute", "CUDA_Host output"}


def test_cpu_layers_of_a_big_batch_run_on_the_first_gpu(make_facts) -> None:
    facts = make_facts(n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=1024)
    gpus = [GpuDevice("CUDA0", 1 << 34)]

    offloaded = estimate(facts, RunSettings(n_ctx=1024, n_gpu_layers=0), gpus)
    kept = estimate(facts, RunSettings(n_ctx=1024, n_gpu_layers=0, op_offload=False), gpus)
    small_batch = estimate(facts, RunSettings(n_ctx=1024, n_gpu_layers=0, n_ubatch=16), gpus)

    assert offloaded.device("CUDA0").compute > 0  # copies of weights and KV on the GPU
    assert kept.device("CUDA0").compute == 0
    assert small_batch.device("CUDA0").compute == 0  # below 32 tokens ggml-cuda declines


@pytest.mark.parametrize("moe", [False, True])
def test_a_few_layers_per_device_give_the_same_buffers_as_all_of_them(
    make_facts, monkeypatch: pytest.MonkeyPatch, moe: bool
) -> None:
    spec = {"n_expert": 4, "n_expert_used": 2} if moe else {}
    shape = prepare(make_facts(n_layer=10, n_embd=128, n_head=2, n_head_kv=1, n_ff=256, **spec))
    gpus = [GpuDevice(f"CUDA{i}", (i + 1) << 30) for i in range(3)]
    for n_gpu_layers, n_gpus, n_ubatch, flash in itertools.product(
        [-1, 10, 4, 0], [1, 3], [16, 512], [False, True]
    ):
        settings = RunSettings(
            n_ctx=1024, n_gpu_layers=n_gpu_layers, n_ubatch=n_ubatch, flash_attn=flash, n_seq_max=2
        )
        graph_spec = reserve_spec(shape, settings, context_params(settings))
        placement = place_layers(shape.n_layer, gpus[:n_gpus], settings)
        results = []
        for keep in (2, shape.n_layer):
            monkeypatch.setattr(compute_module, "KEEP_LAYERS", keep)
            compute_module._CACHE.clear()
            buffers = compute_module.compute_buffers(shape, settings, [graph_spec], placement)
            results.append({device: item.size for device, item in buffers.items()})
        assert results[0] == results[1], (n_gpu_layers, n_gpus, n_ubatch, flash)
