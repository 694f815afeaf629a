"""Architectures without an exact graph get an upper bound, checked against llama.cpp.

The bound (models_app/estimator/bound.py): exact weights, every layer's KV cache at
full size (none for encoders), the llama-like compute replay times 1.5. Generated
models of architectures the estimator does not replay exactly (bert encoders with
pooling, estimated as ``jina-bert-v2``, an encoder of bert.cpp's graph without an exact
one here, since bert itself is exact; mistral3, which llama.cpp loads with its own
loader) are loaded by llama.cpp over a grid of settings; no component of the estimate
may be under what it logged.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from devtools.llama_harness import compare, format_table, measure
from devtools.tiny_gguf import write_tiny_model
from models_app.estimator import CacheType, RunSettings, estimate
from models_app.estimator.shape import EXACT_ARCHITECTURES, prepare
from models_app.gguf import ModelFacts, load_model_facts
from scheduling.backend_logs import Reported

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (the bound is checked against it)",
)

ENCODERS = {
    "bert-mean": dict(arch="bert", pooling="mean", n_ctx_train=512),
    "bert-rank": dict(arch="bert", pooling="rank", n_ctx_train=512),
    "bert-wide": dict(
        arch="bert", pooling="cls", n_ctx_train=2048, n_layer=3, n_embd=256, n_head=8,
        n_ff=1024, n_vocab=3000,
    ),
}  # fmt: skip
DECODERS = {
    "mistral3": dict(arch="mistral3", n_ctx_train=4096, n_embd=128, n_head=4, n_head_kv=2),
    "mistral3-head-dim": dict(
        arch="mistral3", n_ctx_train=8192, n_layer=3, n_embd=256, n_head=8, n_head_kv=2,
        key_length=64, n_ff=768, n_vocab=2000,
    ),
}  # fmt: skip
ENCODER_SETTINGS = [
    RunSettings(n_ctx=512, n_batch=512, n_ubatch=512),
    RunSettings(n_ctx=2048, n_ubatch=512, flash_attn=True),
    RunSettings(n_ctx=2048, n_batch=2048, n_ubatch=2048, n_seq_max=4),
]
DECODER_SETTINGS = [
    RunSettings(n_ctx=512, n_batch=512, n_ubatch=512),
    RunSettings(n_ctx=2048, n_ubatch=512, flash_attn=True),
    RunSettings(
        n_ctx=4096, n_ubatch=1024, n_seq_max=4, flash_attn=True, type_k=CacheType.Q8_0,
        type_v=CacheType.Q8_0,
    ),
    RunSettings(n_ctx=3000, n_ubatch=256, n_seq_max=2),
    RunSettings(n_ctx=4096, n_batch=2048, n_ubatch=2048, n_seq_max=4, kv_unified=True),
]  # fmt: skip
CASES = [
    *((name, settings) for name in ENCODERS for settings in ENCODER_SETTINGS),
    *((name, settings) for name in DECODERS for settings in DECODER_SETTINGS),
]


# bert is exact (encoder.py): its files stand for the bert-graph encoders that are not
BOUND_ENCODER = "jina-bert-v2"


def _facts(path: Path) -> ModelFacts:
    """The facts of a generated model; a bert's relabelled as an encoder without an exact
    graph (the same tensors and keys, read the same way)."""
    facts = load_model_facts(path)
    if facts.architecture == "bert":
        return replace(facts, architecture=BOUND_ENCODER)
    return facts


def _label(name: str, settings: RunSettings) -> str:
    return (
        f"{name} ctx{settings.n_ctx} ub{settings.n_ubatch} np{settings.n_seq_max} "
        f"fa{int(settings.flash_attn)} {settings.type_k.value}"
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("upper-bound")
    return {
        name: write_tiny_model(directory / f"{name}.gguf", **spec)[0]
        for name, spec in {**ENCODERS, **DECODERS}.items()
    }


@pytest.fixture(scope="module")
def reported(models: dict[str, Path]) -> list[Reported]:
    """Every case loaded by llama.cpp once, as an embedding server would (the output
    buffer then holds embeddings too; a decoder's graph is the same)."""
    return measure([(models[name], settings) for name, settings in CASES], embeddings=True)


def test_the_generated_architectures_have_no_exact_graph(models: dict[str, Path]) -> None:
    for path in models.values():
        shape = prepare(_facts(path))
        assert shape.arch not in EXACT_ARCHITECTURES and not shape.exact


@needs_llama_cpp
def test_the_bound_is_never_under_what_llama_cpp_allocates(
    models: dict[str, Path], reported: list[Reported]
) -> None:
    under = []
    for (name, settings), result in zip(CASES, reported, strict=True):
        assert result.error is None, f"{_label(name, settings)}: {result.error}"
        rows = compare(estimate(_facts(models[name]), settings), result)
        # a figure is logged to 0.01 MiB: under by less than that is the log's precision
        if any(row.error < -row.resolution for row in rows):
            under.append(format_table(rows, _label(name, settings)))
    assert not under, "\n\n".join(under)


@needs_llama_cpp
def test_encoders_have_no_kv_cache_in_llama_cpp_nor_in_the_estimate(
    models: dict[str, Path], reported: list[Reported]
) -> None:
    for (name, settings), result in zip(CASES, reported, strict=True):
        if name in ENCODERS:
            assert result.component("kv_cache") == 0
            assert estimate(_facts(models[name]), settings).cpu.kv_cache == 0


def test_an_encoder_batch_is_not_capped_by_the_context(models: dict[str, Path]) -> None:
    result = estimate(_facts(models["bert-mean"]), RunSettings(n_ctx=512, n_batch=2048))

    assert result.context.n_batch == 2048  # llama.cpp: cparams.n_batch of a non-causal model


def test_an_encoder_declared_non_causal_has_no_kv_cache(make_facts) -> None:
    facts = make_facts(n_layer=2)
    arch = "new-encoder"
    metadata = {**facts.metadata, f"{arch}.attention.causal": False}
    encoder = replace(facts, architecture=arch, metadata=metadata)

    assert prepare(encoder).encoder
    assert estimate(encoder, RunSettings(n_ctx=1024)).cpu.kv_cache == 0
    assert estimate(replace(facts, architecture=arch), RunSettings(n_ctx=1024)).cpu.kv_cache > 0


def test_the_compute_bound_is_the_llama_like_replay_times_one_and_a_half(
    models: dict[str, Path],
) -> None:
    facts = load_model_facts(models["mistral3"])
    llama = estimate(replace(facts, architecture="llama"), RunSettings(n_ctx=2048))
    bound = estimate(facts, RunSettings(n_ctx=2048))

    assert bound.cpu.compute == -(-llama.cpu.compute * 3 // 2)
    assert bound.cpu.kv_cache == llama.cpu.kv_cache
    assert bound.cpu.weights == llama.cpu.weights
    assert bound.reasons[0].startswith("upper bound: 'mistral3' has no exact graph")


def test_a_recurrent_models_state_is_added_for_every_layer_and_sequence(
    models: dict[str, Path],
) -> None:
    facts = load_model_facts(models["mistral3-head-dim"])
    ssm = {"conv_kernel": 4, "inner_size": 512, "state_size": 64, "group_count": 1}
    metadata = {**facts.metadata, **{f"mamba2.ssm.{key}": v for key, v in ssm.items()}}
    settings = RunSettings(n_ctx=512, n_seq_max=2)

    plain = estimate(replace(facts, architecture="mamba2"), settings)
    recurrent = estimate(replace(facts, architecture="mamba2", metadata=metadata), settings)

    # F32 conv state (d_conv - 1) x (d_inner + 2 x groups x d_state) + SSM state d_state x d_inner
    per_layer = 4 * (3 * (512 + 2 * 64) + 64 * 512)
    assert recurrent.cpu.kv_cache - plain.cpu.kv_cache == per_layer * 3 * 2  # layers x sequences
