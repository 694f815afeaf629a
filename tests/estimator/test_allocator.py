"""The ggml-alloc replay: best-fit free list, in-place reuse, freeing after the last use,
and the shortcut of simulating only a few alike layers."""

from __future__ import annotations

import itertools

import pytest

from models_app.estimator import ggml
from models_app.estimator.allocator import DynAllocator, GraphAllocator
from models_app.estimator.attention import GraphSpec
from models_app.estimator.compute import layers_to_build
from models_app.estimator.forward import DevicePlan, build_graph
from models_app.estimator.shape import prepare


def _run(graph: ggml.Graph, alignment: int = 32) -> int:
    return GraphAllocator([alignment], [lambda t: t.nbytes]).run(graph)[0]


def test_the_free_list_picks_the_best_fitting_hole_and_merges_neighbours() -> None:
    alloc = DynAllocator(32)
    a, b, c = alloc.alloc(100), alloc.alloc(300), alloc.alloc(100)
    alloc.alloc(50)
    alloc.free(a, 100)
    alloc.free(c, 100)

    assert (a, b, c) == (0, 128, 448)
    assert alloc.alloc(90) == c  # both holes fit; equal sizes: the later one wins
    alloc.free(c, 90)
    alloc.free(b, 300)  # merges with the holes on both sides
    assert alloc.blocks[0] == [0, 576]
    assert alloc.max_size == 640


def test_a_tensor_is_freed_after_its_last_consumer() -> None:
    graph = ggml.Graph()
    x = ggml.new_input("F32", (256,), "x")  # 1 KiB
    a = ggml.cont(x)  # 1 KiB, dies after b
    b = ggml.sum_rows(a)
    c = ggml.cont(ggml.cont(b))
    graph.expand(c)

    # x and a live together (2 KiB); b, c and the inner cont reuse a's hole
    assert _run(graph) == 2048


def _chain(reuse_blocked: bool) -> ggml.Graph:
    graph = ggml.Graph()
    x = ggml.new_input("F32", (256,), "x")  # 1 KiB, alive to the end
    a = ggml.cont(x)
    b = ggml.rms_norm(a)  # in place on a, unless a is used again below
    c = ggml.add(b, a) if reuse_blocked else b
    graph.expand(ggml.add(c, x))
    return graph


def test_an_in_place_op_reuses_its_parent_only_if_it_is_the_last_user() -> None:
    assert _run(_chain(reuse_blocked=False)) == 2 * 1024
    assert _run(_chain(reuse_blocked=True)) == 3 * 1024


def _output_chain(output: bool) -> ggml.Graph:
    graph = ggml.Graph()
    a = ggml.cont(ggml.new_input("F32", (256,), "x"))
    if output:
        a.flags |= ggml.FLAG_OUTPUT
    graph.expand(ggml.cont(ggml.rms_norm(a)))
    return graph


def test_outputs_are_never_freed_or_reused() -> None:
    assert _run(_output_chain(output=False)) == 2 * 1024
    assert _run(_output_chain(output=True)) == 3 * 1024


def _spec(n_tokens: int, n_kv: int, flash_attn: bool, n_stream: int, rot: int) -> GraphSpec:
    return GraphSpec(
        n_tokens, n_tokens, n_stream, n_kv, flash_attn, "Q8_0" if rot else "F16", "F16", rot, 0
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"n_layer": 10, "n_embd": 128, "n_head": 4, "n_head_kv": 2, "n_ff": 256},
        {"n_layer": 10, "arch": "qwen2", "n_embd": 256, "n_head": 4, "n_head_kv": 1, "n_ff": 512},
        {
            "n_layer": 10,
            "n_embd": 128,
            "n_head": 2,
            "n_head_kv": 1,
            "n_ff": 96,
            "n_expert": 4,
            "n_expert_used": 2,
        },
        {
            "n_layer": 10,
            "arch": "qwen3",
            "n_embd": 128,
            "n_head": 4,
            "n_head_kv": 2,
            "key_length": 64,
        },
        {
            "n_layer": 10,
            "arch": "qwen3moe",
            "n_embd": 128,
            "n_head": 4,
            "n_head_kv": 1,
            "key_length": 64,
            "n_ff": 64,
            "n_expert": 8,
            "n_expert_used": 2,
        },
    ],
)
def test_a_few_layers_give_the_same_peak_as_all_of_them(make_facts, spec) -> None:
    shape = prepare(make_facts(**spec))
    for n_tokens, n_kv, fa, n_stream, rot in itertools.product(
        [1, 64, 512], [256, 4096], [False, True], [1, 4], [0, 64]
    ):
        if n_tokens % n_stream:
            continue
        graph_spec = _spec(n_tokens, n_kv, fa, n_stream, rot)
        plan = DevicePlan.single(shape.n_layer)
        full = _run(build_graph(shape, graph_spec, range(10)))
        partial = _run(build_graph(shape, graph_spec, layers_to_build(plan, uniform=True)))
        assert partial == full, (n_tokens, n_kv, fa, n_stream, rot)


@pytest.mark.parametrize(
    ("fields", "nodes"),
    [
        ({}, 78),
        ({"arch": "qwen3", "key_length": 64}, 86),  # + Q/K norms: RMS_NORM and MUL each
        (
            {"arch": "qwen3moe", "key_length": 64, "n_ff": 64, "n_expert": 4, "n_expert_used": 2},
            118,
        ),
    ],
    ids=["llama", "qwen3", "qwen3moe"],
)
def test_the_graph_has_the_node_count_llama_cpp_reports(make_facts, fields, nodes) -> None:
    # llama.cpp logs "graph: nodes = N" for these 2-layer models (no flash attention)
    spec = {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_head_kv": 2, "n_ff": 128, **fields}
    shape = prepare(make_facts(**spec))

    graph = build_graph(shape, _spec(512, 512, False, 1, 0), range(2))

    assert len(graph.nodes) == nodes


def test_only_the_first_two_and_the_last_layer_of_a_run_are_built() -> None:
    plan = DevicePlan.single(10)

    assert layers_to_build(plan, uniform=True) == [0, 1, 9]
    assert layers_to_build(plan, uniform=False) == list(range(10))
