"""Tiny but real GGUF models for tests: llama, qwen2 and llama-style MoE (Mixtral).

The files carry the metadata llama.cpp needs to load them (hyperparameters, a
byte-level BPE vocabulary, special tokens), so they can be used to start real
backends as well as to test the header parser and the memory estimator::

    paths = write_tiny_model(tmp_path / "tiny.gguf", arch="qwen2", n_layer=2)
    paths = write_tiny_model(tmp_path / "moe.gguf", n_expert=4, n_expert_used=2)

``header_only=True`` writes only the header (no tensor data), which is how a
70B-shaped file can be made in milliseconds; parse it with ``PartialFileSource``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, TokenType
from gguf.quants import quant_shape_to_byte_shape, quantize

Q = GGMLQuantizationType
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ARCHITECTURES = ("llama", "qwen2")
_FILE_TYPES = {
    Q.F32: LlamaFileType.ALL_F32,
    Q.F16: LlamaFileType.MOSTLY_F16,
    Q.BF16: LlamaFileType.MOSTLY_BF16,
    Q.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    Q.Q4_1: LlamaFileType.MOSTLY_Q4_1,
    Q.Q5_0: LlamaFileType.MOSTLY_Q5_0,
    Q.Q5_1: LlamaFileType.MOSTLY_Q5_1,
    Q.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    Q.Q2_K: LlamaFileType.MOSTLY_Q2_K,
    Q.Q3_K: LlamaFileType.MOSTLY_Q3_K_M,
    Q.Q4_K: LlamaFileType.MOSTLY_Q4_K_M,
    Q.Q5_K: LlamaFileType.MOSTLY_Q5_K_M,
    Q.Q6_K: LlamaFileType.MOSTLY_Q6_K,
}


@dataclass(frozen=True)
class TinyModelSpec:
    """Hyperparameters of a generated model (llama.cpp names in comments).

    ``n_head_kv`` and ``n_ff`` may be per-layer sequences (for parser and estimator
    tests: llama.cpp's llama and qwen2 loaders want one value). With ``n_expert > 0``
    the feed-forward blocks become Mixtral-style experts of size ``n_ff``.
    Matrices use ``weight_type``; norms and biases are F32.
    """

    arch: str = "llama"
    name: str = "tiny"
    n_layer: int = 2  # block_count
    n_embd: int = 64  # embedding_length
    n_head: int = 4  # attention.head_count
    n_head_kv: int | Sequence[int] = 2  # attention.head_count_kv
    n_ff: int | Sequence[int] = 128  # feed_forward_length
    n_vocab: int = 320  # tokenizer.ggml.tokens (at least 260)
    n_ctx_train: int = 256  # context_length
    n_expert: int = 0  # expert_count
    n_expert_used: int = 0  # expert_used_count
    weight_type: GGMLQuantizationType = Q.F16
    embedding_type: GGMLQuantizationType | None = None  # token_embd; default weight_type
    output_type: GGMLQuantizationType | None = None  # output; default weight_type
    tied_embeddings: bool = False  # no output.weight
    sliding_window: int | None = None
    chat_template: str | None = None
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def per_layer(self, value: int | Sequence[int], layer: int) -> int:
        return value if isinstance(value, int) else int(value[layer])


def write_tiny_model(
    path: str | Path,
    spec: TinyModelSpec | None = None,
    *,
    header_only: bool = False,
    split_max_tensors: int = 0,
    **fields: Any,
) -> list[Path]:
    """Write a model and return the paths written (several when split into shards).

    ``fields`` override ``spec`` (``write_tiny_model(p, n_layer=4, arch="qwen2")``).
    ``split_max_tensors`` splits into ``name-0000N-of-0000M.gguf`` shards.
    """
    spec = replace(spec or TinyModelSpec(), **fields)
    _check_spec(spec)
    path = Path(path)
    writer = GGUFWriter(path, spec.arch, split_max_tensors=split_max_tensors)
    _add_hparams(writer, spec)
    _add_vocab(writer, spec)
    rng = np.random.default_rng(spec.seed)
    for name, ne, qtype in model_tensors(spec):
        _add_tensor(writer, name, ne, qtype, rng, header_only)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    if header_only:
        writer.write_ti_data_to_file()
    else:
        writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(path)


def _check_spec(spec: TinyModelSpec) -> None:
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, not {spec.arch!r}")
    if spec.n_embd % spec.n_head:
        raise ValueError("n_embd must be a multiple of n_head")
    if spec.n_vocab < 256 + len(SPECIAL_TOKENS) + 1:
        raise ValueError("n_vocab must be at least 260 (byte tokens, specials, one merge)")
    if spec.n_expert and not 0 < spec.n_expert_used <= spec.n_expert:
        raise ValueError("n_expert_used must be between 1 and n_expert")


def _add_hparams(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    writer.add_name(spec.name)
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_rope_dimension_count(spec.head_dim)
    if spec.n_expert:
        writer.add_expert_count(spec.n_expert)
        writer.add_expert_used_count(spec.n_expert_used)
    if spec.sliding_window is not None:
        writer.add_sliding_window(spec.sliding_window)
    file_type = _FILE_TYPES.get(spec.weight_type)
    if file_type is not None:
        writer.add_file_type(int(file_type))
    writer.add_quantization_version(2)


def _add_vocab(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    tokens, merges = tiny_bpe_vocab(spec.n_vocab)
    special = spec.n_vocab - len(SPECIAL_TOKENS)
    types = [TokenType.NORMAL] * special + [TokenType.CONTROL] * len(SPECIAL_TOKENS)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special)
    writer.add_eos_token_id(special)
    writer.add_add_bos_token(False)
    if spec.chat_template:
        writer.add_chat_template(spec.chat_template)


def _byte_to_unicode() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return [mapping[byte] for byte in range(256)]


def tiny_bpe_vocab(n_vocab: int) -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary of ``n_vocab`` tokens and the merges that build it.

    The 256 byte tokens come first, then merged letter sequences, then the special tokens.
    """
    byte_tokens = _byte_to_unicode()
    n_merged = n_vocab - 256 - len(SPECIAL_TOKENS)
    merged: list[str] = []
    merges: list[str] = []
    for left, right in _letter_merges():
        if len(merged) == n_merged:
            break
        merged.append(left + right)
        merges.append(f"{left} {right}")
    return [*byte_tokens, *merged, *SPECIAL_TOKENS], merges


def _letter_merges() -> Iterator[tuple[str, str]]:
    letters = [chr(0x120), *"etaoinshrdlucmfwypvbgkjqxz"]  # chr(0x120) is GPT-2's space
    queue = deque(letters)
    while queue:
        left = queue.popleft()
        for right in letters:
            queue.append(left + right)
            yield left, right


def model_tensors(spec: TinyModelSpec) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    """(name, ggml shape ne0-first, type) of every tensor, in file order."""
    embd_type = spec.embedding_type or spec.weight_type
    yield "token_embd.weight", (spec.n_embd, spec.n_vocab), embd_type
    for layer in range(spec.n_layer):
        for name, ne, qtype in _block_tensors(spec, layer):
            yield f"blk.{layer}.{name}", ne, qtype
    yield "output_norm.weight", (spec.n_embd,), Q.F32
    if not spec.tied_embeddings:
        yield "output.weight", (spec.n_embd, spec.n_vocab), spec.output_type or spec.weight_type


def _block_tensors(spec: TinyModelSpec, layer: int) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    embd, wtype = spec.n_embd, spec.weight_type
    q_dim = spec.n_head * spec.head_dim
    kv_dim = spec.per_layer(spec.n_head_kv, layer) * spec.head_dim
    yield "attn_norm.weight", (embd,), Q.F32
    yield "attn_q.weight", (embd, q_dim), wtype
    yield "attn_k.weight", (embd, kv_dim), wtype
    yield "attn_v.weight", (embd, kv_dim), wtype
    if spec.arch == "qwen2":
        yield "attn_q.bias", (q_dim,), Q.F32
        yield "attn_k.bias", (kv_dim,), Q.F32
        yield "attn_v.bias", (kv_dim,), Q.F32
    yield "attn_output.weight", (q_dim, embd), wtype
    yield "ffn_norm.weight", (embd,), Q.F32
    yield from _ffn_tensors(spec, layer)


def _ffn_tensors(spec: TinyModelSpec, layer: int) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    embd, wtype, n_ff = spec.n_embd, spec.weight_type, spec.per_layer(spec.n_ff, layer)
    if spec.n_expert:
        n_exp = spec.n_expert
        yield "ffn_gate_inp.weight", (embd, n_exp), Q.F32
        yield "ffn_gate_exps.weight", (embd, n_ff, n_exp), wtype
        yield "ffn_down_exps.weight", (n_ff, embd, n_exp), wtype
        yield "ffn_up_exps.weight", (embd, n_ff, n_exp), wtype
        return
    yield "ffn_gate.weight", (embd, n_ff), wtype
    yield "ffn_down.weight", (n_ff, embd), wtype
    yield "ffn_up.weight", (embd, n_ff), wtype


def _add_tensor(
    writer: GGUFWriter,
    name: str,
    ne: tuple[int, ...],
    qtype: Q,
    rng: np.random.Generator,
    header_only: bool,
) -> None:
    shape = tuple(reversed(ne))  # numpy order: rows last-dim first
    if header_only:
        nbytes = int(np.prod(quant_shape_to_byte_shape(shape, qtype), dtype=np.int64))
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        return
    values = _weights(name, shape, rng)
    if qtype in (Q.F32, Q.F16):
        writer.add_tensor(name, quantize(values, qtype))
        return
    try:
        data = quantize(values, qtype)
    except NotImplementedError:  # no Python quantizer: zero blocks are valid and load
        data = np.zeros(quant_shape_to_byte_shape(shape, qtype), dtype=np.uint8)
    writer.add_tensor(name, data, raw_dtype=qtype)


def _weights(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name.endswith("norm.weight"):
        return np.ones(shape, dtype=np.float32)
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
