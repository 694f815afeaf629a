"""Facts read from real (generated) llama, qwen2 and MoE models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFWriter

from devtools.tiny_gguf import TinyModelSpec, model_tensors, write_tiny_model
from models_app.gguf import (
    ArraySummary,
    ModelFacts,
    PartialFileSource,
    file_type_name,
    load_model_facts,
    parse_model,
)


def _reference(path: Path) -> GGUFReader:
    return GGUFReader(path)


def test_it_reads_a_llama_model_with_grouped_query_attention(llama_gqa: Path) -> None:
    facts = load_model_facts(llama_gqa)

    assert facts.architecture == "llama"
    assert facts.name == "Tiny Llama GQA"
    assert (facts.block_count, facts.embedding_length, facts.feed_forward_length) == (3, 128, 256)
    assert (facts.head_count, facts.head_count_kv) == (8, 2)
    assert (facts.key_length, facts.value_length) == (16, 16)
    assert facts.context_length == 512
    assert facts.vocab_size == 320
    assert facts.expert_count is None and facts.sliding_window is None
    assert facts.tied_embeddings is False
    assert facts.has_chat_template is True
    assert facts.file_type == "F16" and facts.dominant_tensor_type == "F16"
    assert facts.tensor_count == 2 + 3 * 9 + 1


def test_attention_shapes_follow_the_kv_head_count(llama_gqa: Path) -> None:
    tensors = {t.name: t for t in load_model_facts(llama_gqa).tensors}

    assert tensors["blk.0.attn_q.weight"].shape == (128, 128)
    assert tensors["blk.0.attn_k.weight"].shape == (128, 32)
    assert tensors["blk.0.attn_v.weight"].shape == (128, 32)
    assert tensors["token_embd.weight"].shape == (128, 320)


def test_parameter_count_is_the_sum_of_tensor_elements(llama_gqa: Path) -> None:
    facts = load_model_facts(llama_gqa)
    reference = _reference(llama_gqa)

    assert facts.parameter_count == sum(int(t.n_elements) for t in reference.tensors)


def test_bytes_per_layer_sum_the_block_tensors(llama_gqa: Path) -> None:
    facts = load_model_facts(llama_gqa)
    reference = _reference(llama_gqa)
    expected = [
        sum(int(t.n_bytes) for t in reference.tensors if t.name.startswith(f"blk.{layer}."))
        for layer in range(3)
    ]

    assert list(facts.bytes_per_layer) == expected
    assert facts.total_tensor_bytes == sum(int(t.n_bytes) for t in reference.tensors)


def test_it_describes_the_embedding_and_output_tensors(llama_gqa: Path) -> None:
    facts = load_model_facts(llama_gqa)

    assert facts.token_embedding is not None and facts.output is not None
    assert facts.token_embedding.name == "token_embd.weight"
    assert facts.token_embedding.ggml_type == "F16"
    assert facts.token_embedding.n_bytes == 128 * 320 * 2
    assert facts.output.name == "output.weight"
    assert facts.output.shape == (128, 320)


@pytest.mark.parametrize(
    "weight_type", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q4_K, Q.Q6_K]
)
def test_tensor_sizes_and_offsets_match_the_reference_reader(
    tmp_path: Path, weight_type: Q
) -> None:
    (path,) = write_tiny_model(tmp_path / "m.gguf", n_embd=256, n_ff=512, weight_type=weight_type)
    facts = load_model_facts(path)
    reference = _reference(path)
    data_offset = facts.shards[0].data_offset

    assert data_offset == reference.data_offset
    assert 0 <= path.stat().st_size - facts.shards[0].required_size < 32
    for ours, theirs in zip(facts.tensors, reference.tensors, strict=True):
        assert ours.name == theirs.name
        assert ours.ggml_type == theirs.tensor_type.name
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.n_bytes == int(theirs.n_bytes)
        assert data_offset + ours.offset == int(theirs.data_offset)


def test_it_reads_a_qwen2_model_with_attention_biases(qwen2_q8: Path) -> None:
    facts = load_model_facts(qwen2_q8)
    tensors = {t.name: t for t in facts.tensors}

    assert facts.architecture == "qwen2"
    assert tensors["blk.0.attn_q.bias"].shape == (64,)
    assert tensors["blk.0.attn_k.bias"].shape == (32,)
    assert tensors["blk.1.attn_v.bias"].ggml_type == "F32"
    assert tensors["blk.0.attn_q.weight"].ggml_type == "Q8_0"
    assert facts.file_type == "Q8_0" and facts.dominant_tensor_type == "Q8_0"
    assert facts.metadata["qwen2.rope.freq_base"] == 1e6


def test_it_reads_a_mixture_of_experts_model(moe_q4: Path) -> None:
    facts = load_model_facts(moe_q4)
    tensors = {t.name: t for t in facts.tensors}

    assert (facts.expert_count, facts.expert_used_count) == (4, 2)
    assert tensors["blk.0.ffn_gate_exps.weight"].shape == (64, 128, 4)
    assert tensors["blk.0.ffn_down_exps.weight"].shape == (128, 64, 4)
    assert tensors["blk.0.ffn_up_exps.weight"].n_bytes == 64 // 32 * 18 * 128 * 4
    assert tensors["blk.1.ffn_gate_inp.weight"].shape == (64, 4)
    assert facts.file_type == "Q4_0" and facts.dominant_tensor_type == "Q4_0"


def test_it_reports_tied_embeddings_when_there_is_no_output_tensor(tmp_path: Path) -> None:
    (path,) = write_tiny_model(tmp_path / "tied.gguf", tied_embeddings=True)
    facts = load_model_facts(path)

    assert facts.tied_embeddings is True
    assert facts.output is None


def test_per_layer_head_counts_and_feed_forward_sizes_are_tuples(tmp_path: Path) -> None:
    (path,) = write_tiny_model(
        tmp_path / "per-layer.gguf", n_layer=3, n_head_kv=[2, 4, 1], n_ff=[128, 64, 96]
    )
    facts = load_model_facts(path)

    assert facts.head_count_kv == (2, 4, 1)
    assert facts.feed_forward_length == (128, 64, 96)
    assert facts.head_count == 4
    sizes = {t.name: t.shape for t in facts.tensors}
    assert sizes["blk.2.attn_k.weight"] == (64, 16)


def test_sliding_window_comes_from_the_attention_metadata(tmp_path: Path) -> None:
    (path,) = write_tiny_model(tmp_path / "swa.gguf", sliding_window=128)

    assert load_model_facts(path).sliding_window == 128


def test_a_model_without_chat_template_says_so(qwen2_q8: Path) -> None:
    assert load_model_facts(qwen2_q8).has_chat_template is False


def _header_only(path: Path, **keys: int) -> Path:
    writer = GGUFWriter(path, "llama")
    writer.add_embedding_length(4096)
    writer.add_head_count(32)
    for key, value in keys.items():
        writer.add_uint32(f"llama.{key}", value)
    writer.add_tensor_info("token_embd.weight", (1000, 4096), np.dtype(np.float16), 1000 * 4096 * 2)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


def test_head_sizes_default_to_embedding_over_heads(tmp_path: Path) -> None:
    facts = load_model_facts(_header_only(tmp_path / "h.gguf"), partial=True)

    assert (facts.key_length, facts.value_length) == (128, 128)
    assert facts.vocab_size == 1000  # from token_embd when there is no tokenizer


def test_head_sizes_come_from_the_metadata_when_present(tmp_path: Path) -> None:
    path = _header_only(tmp_path / "h.gguf", **{"attention.key_length": 192})
    facts = load_model_facts(path, partial=True)

    assert (facts.key_length, facts.value_length) == (192, 128)


@pytest.mark.parametrize(
    ("file_type", "name"),
    [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (7, "Q8_0"),
        (15, "Q4_K_M"),
        (14, "Q4_K_S"),
        (18, "Q6_K"),
        (32, "BF16"),
        (1024 | 15, "Q4_K_M (guessed)"),
        (4, "Q4_1_SOME_F16"),
        (999, "unknown(999)"),
    ],
)
def test_it_names_file_types_as_llama_cpp_does(file_type: int, name: str) -> None:
    assert file_type_name(file_type) == name


def test_it_keeps_tokenizer_arrays_out_of_the_metadata_and_records_their_lengths(
    llama_gqa: Path,
) -> None:
    metadata = load_model_facts(llama_gqa).metadata

    assert metadata["tokenizer.ggml.tokens"] == ArraySummary("string", 320)
    assert metadata["tokenizer.ggml.token_type"] == ArraySummary("int32", 320)
    assert isinstance(metadata["tokenizer.ggml.merges"], ArraySummary)
    assert metadata["tokenizer.ggml.model"] == "gpt2"
    assert metadata["llama.attention.head_count_kv"] == 2


def test_facts_are_plain_json(llama_gqa: Path) -> None:
    facts = load_model_facts(llama_gqa)
    data = json.loads(json.dumps(facts.to_dict(), allow_nan=False))

    assert data["architecture"] == "llama"
    assert data["metadata"]["tokenizer.ggml.tokens"] == {"item_type": "string", "length": 320}
    assert data["tensors"][0]["name"] == "token_embd.weight"
    assert data["token_embedding"]["shape"] == [128, 320]
    assert data["shards"][0]["required_size"] <= llama_gqa.stat().st_size


def test_facts_are_frozen(llama_gqa: Path) -> None:
    facts: ModelFacts = load_model_facts(llama_gqa)

    with pytest.raises(AttributeError):
        facts.architecture = "other"  # type: ignore[misc]


def test_a_70b_shaped_header_gives_70b_facts(tmp_path: Path) -> None:
    spec = TinyModelSpec(
        n_layer=80,
        n_embd=8192,
        n_head=64,
        n_head_kv=8,
        n_ff=28672,
        n_vocab=128256,
        n_ctx_train=131072,
        weight_type=Q.Q4_K,
        output_type=Q.Q6_K,
    )
    (path,) = write_tiny_model(tmp_path / "70b.gguf", spec, header_only=True)
    with PartialFileSource(path) as source:  # header only: no tensor data
        facts = parse_model(source)

    assert facts.tensor_count == 723
    assert facts.parameter_count == sum(np.prod(ne) for _, ne, _ in model_tensors(spec))
    assert 70e9 < facts.parameter_count < 71e9
    assert facts.vocab_size == 128256
    assert len(facts.bytes_per_layer) == 80
    assert facts.file_type == "Q4_K_M"
    assert facts.output is not None and facts.output.ggml_type == "Q6_K"


def test_facts_come_back_unchanged_from_their_json_form(
    llama_gqa: Path, moe_q4: Path, tmp_path: Path
) -> None:
    (per_layer,) = write_tiny_model(tmp_path / "p.gguf", n_layer=2, n_head_kv=[1, 2])

    for path in (llama_gqa, moe_q4, per_layer):
        facts = load_model_facts(path)
        stored = json.loads(json.dumps(facts.to_dict()))
        assert ModelFacts.from_dict(stored) == facts


def test_tensor_type_counts_and_bytes_describe_the_mix_of_types(qwen2_q8: Path) -> None:
    facts = load_model_facts(qwen2_q8)

    assert facts.tensor_type_counts == {"Q8_0": 2 + 2 * 7, "F32": 1 + 2 * 5}
    assert sum(facts.tensor_type_bytes.values()) == facts.total_tensor_bytes
