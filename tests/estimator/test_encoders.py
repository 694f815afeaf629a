"""Embedding and reranker models are estimated exactly: bert and nomic-bert encoders (no
KV cache, attention over the ubatch alone) and the pooling llama.cpp appends when
embeddings are on (mean, cls, last, rank with a classifier head), also after a qwen3
decoder. The matrix's embedding models (``devtools/estimator_matrix.py``, the entries with a
pooling type) are loaded by llama.cpp over the embedding settings grid and must match
its buffers to the logged precision; each of them embeds or ranks in llama.cpp.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from devtools.estimator_matrix import ARCHES, EMBEDDING_VARIANTS, WEIGHT_TYPES, cases
from devtools.llama_harness import compare, format_table, measure
from devtools.tiny_gguf import TinyModelSpec, model_tensors, write_tiny_model
from models_app.estimator import RunSettings, estimate
from models_app.estimator.encoder import pooling_type
from models_app.estimator.estimate import is_bound
from models_app.estimator.shape import INPUT_LAYER, prepare
from models_app.gguf import load_model_facts
from scheduling.backend_logs import Reported

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (the estimate is checked against it)",
)
EMBEDDING_MODELS = [name for name, spec in ARCHES.items() if "pooling" in spec]
CASES = [case for case in cases() if case.arch in EMBEDDING_MODELS]
SETTINGS = EMBEDDING_VARIANTS["emb-ctx512-ub512"]
SMALL = {"n_layer": 2, "n_embd": 128, "n_head": 2, "n_ff": 256, "n_vocab": 500}


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("embedding-matrix")
    written = {}
    for case in CASES:
        if case.model not in written:
            path = directory / f"{case.model}.gguf"
            spec = ARCHES[case.arch]
            (written[case.model],) = write_tiny_model(
                path, weight_type=WEIGHT_TYPES[case.weight_type], **spec
            )
    return written


@pytest.fixture(scope="module")
def reported(paths: dict[str, Path]) -> list[Reported]:
    return measure([(paths[case.model], case.settings) for case in CASES])


# --- what the estimator reads and counts -------------------------------------------------


@pytest.mark.parametrize("arch", ["bert", "nomic-bert"])
def test_bert_and_nomic_bert_are_exact_encoders_without_a_kv_cache(make_facts, arch: str) -> None:
    facts = make_facts(arch=arch, pooling="mean", n_ctx_train=512, **SMALL)
    result = estimate(facts, SETTINGS)

    assert prepare(facts).exact and prepare(facts).encoder
    assert not result.reasons and not is_bound(prepare(facts), SETTINGS)
    assert result.cpu.kv_cache == 0 and result.cpu.compute > 0


def test_bert_weights_hold_token_types_positions_and_the_classifier(make_facts) -> None:
    shape = prepare(make_facts(arch="bert", pooling="rank", n_ctx_train=512, **SMALL))
    layers = {weight.name: weight.layer for weight in shape.weights}

    assert layers["token_types.weight"] == layers["position_embd.weight"] == INPUT_LAYER
    assert layers["token_embd_norm.weight"] == 0  # llama.cpp: on the first layer's device
    assert layers["cls.weight"] == layers["cls.output.weight"] == shape.n_layer  # output
    assert not shape.tied_embeddings  # an encoder has no output head to tie


def test_nomic_bert_reads_its_fused_qkv(make_facts) -> None:
    shape = prepare(make_facts(arch="nomic-bert", pooling="mean", **SMALL))

    assert all(layer.fused_qkv and not layer.qkv_bias for layer in shape.layers)
    assert shape.n_head_kv_max == 2 and shape.head_dim_k == 64


def test_the_nomic_bert_generator_writes_rope_fused_qkv_and_swiglu() -> None:
    tensors = {
        name: ne
        for name, ne, _ in model_tensors(TinyModelSpec(arch="nomic-bert", pooling="mean", **SMALL))
    }

    assert "position_embd.weight" not in tensors and "token_types.weight" in tensors
    assert tensors["blk.1.attn_qkv.weight"] == (128, 3 * 128)
    assert tensors["blk.0.ffn_gate.weight"] == tensors["blk.0.ffn_up.weight"] == (128, 256)
    assert not [name for name in tensors if name.startswith("blk.") and name.endswith(".bias")
                and "norm" not in name]  # fmt: skip


def test_the_pooling_is_the_settings_else_the_models_else_none(make_facts) -> None:
    shape = prepare(make_facts(arch="bert", pooling="cls", **SMALL))
    plain = prepare(make_facts(arch="bert", **SMALL))

    assert pooling_type(shape, SETTINGS) == "cls"
    assert pooling_type(shape, replace(SETTINGS, pooling="mean")) == "mean"
    assert pooling_type(plain, SETTINGS) == "none"
    assert pooling_type(shape, replace(SETTINGS, embeddings=False)) == ""


def test_the_output_holds_logits_and_an_embedding_per_sequence(make_facts) -> None:
    """``output_reserve(n_seq_max)``: every context has logits, embeddings add n_embd."""
    facts = make_facts(arch="bert", pooling="mean", **SMALL)
    result = estimate(facts, replace(SETTINGS, n_ctx=2048, n_seq_max=4))

    assert result.cpu.output == (500 + 128) * 4 * 4
    assert any("host output buffer grows" in caveat for caveat in result.caveats)


def test_mean_pooling_over_a_padded_ubatch_carries_llama_cpps_abort(make_facts) -> None:
    """llama-server -np 3 -ub 700 with mean pooling aborts in llama.cpp 0.3.36."""
    facts = make_facts(arch="nomic-bert", pooling="mean", n_ctx_train=2048, **SMALL)
    settings = replace(SETTINGS, n_ctx=2100, n_seq_max=3, n_batch=700, n_ubatch=700)

    padded = estimate(facts, settings).caveats
    fine = estimate(facts, replace(settings, n_batch=699, n_ubatch=699)).caveats

    assert any("aborts at start-up with mean pooling" in caveat for caveat in padded)
    assert not any("aborts" in caveat for caveat in fine)


def test_an_encoder_attends_over_the_ubatch_so_compute_grows_with_its_square(make_facts) -> None:
    facts = make_facts(arch="bert", pooling="mean", n_ctx_train=2048, **SMALL)

    def compute(n_ubatch: int, flash_attn: bool = False) -> int:
        settings = RunSettings(
            n_ctx=2048, n_batch=n_ubatch, n_ubatch=n_ubatch, flash_attn=flash_attn,
            embeddings=True,
        )  # fmt: skip
        return estimate(facts, settings).cpu.compute

    scores, mask = 2 * 2048 * 2048 * 4, 2048 * 2048 * 4  # two heads' F32 K·Q, an F32 mask
    assert compute(2048) > scores + mask
    assert compute(2048) > 3.5 * compute(1024)
    assert compute(2048, flash_attn=True) < scores  # no scores kept, an F16 mask


def test_a_rerankers_classifier_and_an_embedding_decoders_pooling_are_exact(make_facts) -> None:
    facts = make_facts(**ARCHES["qwen3-rank"])
    settings = replace(SETTINGS, n_ctx=1024, n_seq_max=2)

    result = estimate(facts, settings)

    assert not result.reasons and not is_bound(prepare(facts), settings)
    assert result.cpu.kv_cache > 0  # a decoder keeps its cache


# --- against llama.cpp -------------------------------------------------------------------


@needs_llama_cpp
def test_every_embedding_case_of_the_matrix_matches_llama_cpp(
    paths: dict[str, Path], reported: list[Reported]
) -> None:
    """Weights, output and total within the targets, compute to the logged precision."""
    off = []
    for case, result in zip(CASES, reported, strict=True):
        assert result.error is None, f"{case.name}: {result.error}"
        rows = compare(estimate(load_model_facts(paths[case.model]), case.settings), result)
        compute = next(row for row in rows if row.component == "compute")
        if not all(row.within for row in rows) or abs(compute.error) > compute.resolution:
            off.append(format_table(rows, case.name))
    assert not off, "\n\n".join(off)


@needs_llama_cpp
def test_encoders_have_no_kv_cache_in_llama_cpp(reported: list[Reported]) -> None:
    for case, result in zip(CASES, reported, strict=True):
        if ARCHES[case.arch]["arch"] in ("bert", "nomic-bert"):
            assert result.component("kv_cache") == 0, case.name


def _pooled(llama_cpp: Any, model: Any, text: str) -> list[float]:
    """One sequence's pooled output (n_cls_out scores for a reranker, as llama.cpp
    returns them: ``Llama.embed`` would read n_embd floats)."""
    model._batch.reset()
    model._batch.add_sequence(model.tokenize(text.encode()), 0, True)
    model._ctx.kv_cache_clear()
    model._ctx.decode(model._batch)
    width = llama_cpp.llama_model_n_cls_out(model.model)
    if model.pooling_type() != llama_cpp.LLAMA_POOLING_TYPE_RANK:
        width = model.n_embd()
    return list(llama_cpp.llama_get_embeddings_seq(model._ctx.ctx, 0)[:width])


@needs_llama_cpp
@pytest.mark.parametrize("name", EMBEDDING_MODELS)
def test_llama_cpp_embeds_or_ranks_with_the_matrix_models(
    paths: dict[str, Path], name: str
) -> None:
    import llama_cpp

    for weight_type in WEIGHT_TYPES:
        path = paths[f"{name}-{weight_type}"]
        model = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=512, verbose=False)
        try:
            values = _pooled(llama_cpp, model, "what is a cat? a cat sat on the mat")
        finally:
            model.close()
        expected = ARCHES[name].get("n_cls_out", 1) if ARCHES[name]["pooling"] == "rank" else 256
        assert len(values) == expected, f"{name}-{weight_type}"
        assert all(math.isfinite(value) for value in values), f"{name}-{weight_type}"
