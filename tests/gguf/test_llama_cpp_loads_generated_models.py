"""The generated tiny models are real: llama.cpp (llama-cpp-python) loads them and generates.

Skipped where llama-cpp-python is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gguf import GGMLQuantizationType as Q

from devtools.estimator_matrix import ARCHES
from devtools.tiny_gguf import CHATML_TEMPLATE, write_tiny_model
from models_app.gguf import load_model_facts

llama_cpp = pytest.importorskip("llama_cpp")

CASES: dict[str, dict[str, Any]] = {
    "llama-gqa-f16": {"n_head": 8, "n_head_kv": 2, "n_embd": 128},
    "qwen2-q8_0": {"arch": "qwen2", "weight_type": Q.Q8_0, "chat_template": CHATML_TEMPLATE},
    "moe-q4_0": {"n_expert": 4, "n_expert_used": 2, "weight_type": Q.Q4_0},
    "tied-f32": {"weight_type": Q.F32, "tied_embeddings": True},
    "q4_k-zero-blocks": {"weight_type": Q.Q4_K, "n_embd": 256, "n_ff": 512},
    "qwen3-q8_0": {"arch": "qwen3", "n_embd": 128, "key_length": 64, "weight_type": Q.Q8_0},
    "qwen3moe-q4_0": {
        "arch": "qwen3moe",
        "n_embd": 128,
        "key_length": 64,
        "n_ff": 64,
        "n_expert": 8,
        "n_expert_used": 2,
        "weight_type": Q.Q4_0,
    },
    # the estimator matrix's models of these architectures (their shapes in matrix.py)
    "gemma2-q8_0": {**ARCHES["gemma2"], "weight_type": Q.Q8_0},
    "gemma3-q4_0": {**ARCHES["gemma3"], "weight_type": Q.Q4_0},
    "phi3-f16": {**ARCHES["phi3"], "weight_type": Q.F16},
    "qwen2moe-q8_0": {**ARCHES["qwen2moe"], "weight_type": Q.Q8_0},
    "deepseek2-lite-f16": {**ARCHES["deepseek2-lite"], "weight_type": Q.F16},
    "deepseek2-q8_0": {**ARCHES["deepseek2"], "weight_type": Q.Q8_0},
    "glm4moe-q4_0": {**ARCHES["glm4moe"], "weight_type": Q.Q4_0},
    "gpt-oss-q8_0": {**ARCHES["gpt-oss"], "weight_type": Q.Q8_0},  # MXFP4 experts
    "lfm2-q4_0": {**ARCHES["lfm2"], "weight_type": Q.Q4_0},  # short-conv + attention hybrid
    "granite-hybrid-q8_0": {**ARCHES["granite-hybrid"], "weight_type": Q.Q8_0},  # Mamba-2 hybrid
    "granite-hybrid-moe-q4_0": {**ARCHES["granite-hybrid-moe"], "weight_type": Q.Q4_0},
}


def _generate(path: Path) -> tuple[str, dict[str, Any]]:
    model = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False, seed=1)
    try:
        result = model("hello there", max_tokens=3)
        return result["choices"][0]["text"], result["usage"]
    finally:
        model.close()


@pytest.mark.parametrize("case", CASES)
def test_llama_cpp_loads_a_generated_model_and_generates_tokens(tmp_path: Path, case: str) -> None:
    (path,) = write_tiny_model(tmp_path / f"{case}.gguf", **CASES[case])

    text, usage = _generate(path)

    assert isinstance(text, str)
    assert usage["completion_tokens"] >= 1
    assert usage["prompt_tokens"] > 0


def test_llama_cpp_loads_a_split_model_from_its_first_shard(tmp_path: Path) -> None:
    paths = write_tiny_model(tmp_path / "split.gguf", split_max_tensors=8)
    facts = load_model_facts(paths[0])

    _text, usage = _generate(paths[0])

    assert len(facts.shards) == 3
    assert usage["completion_tokens"] >= 1


def test_llama_cpp_agrees_with_the_parsed_facts(tmp_path: Path) -> None:
    (path,) = write_tiny_model(tmp_path / "m.gguf", n_head=8, n_head_kv=2, n_embd=128)
    facts = load_model_facts(path)
    model = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False)
    try:
        assert model.n_vocab() == facts.vocab_size
        assert model.n_embd() == facts.embedding_length
        assert model.n_ctx() == 256
        assert llama_cpp.llama_model_n_params(model.model) == facts.parameter_count
        assert llama_cpp.llama_model_size(model.model) == facts.total_tensor_bytes
        assert model.metadata["llama.attention.head_count_kv"] == str(facts.head_count_kv)
    finally:
        model.close()


def test_llama_cpp_reads_qwen3moe_experts_as_wide_as_expert_feed_forward_length(
    tmp_path: Path,
) -> None:
    (path,) = write_tiny_model(
        tmp_path / "moe.gguf", arch="qwen3moe", n_ff=96, n_expert=4, n_expert_used=2
    )
    facts = load_model_facts(path)
    model = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False)
    try:
        assert model.metadata["qwen3moe.expert_feed_forward_length"] == "96"
        assert model.metadata["qwen3moe.feed_forward_length"] == "192"  # 96 * 2 used
        assert llama_cpp.llama_model_size(model.model) == facts.total_tensor_bytes
    finally:
        model.close()
    up = next(info for info in facts.tensors if info.name == "blk.0.ffn_up_exps.weight")
    assert up.shape == (64, 96, 4)
