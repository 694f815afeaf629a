"""Tiny but real GGUF models for tests: llama, qwen2, qwen3, llama-style MoE (Mixtral), qwen3moe,
gemma2 and gemma3 (post-norms, soft-capping, sliding-window layers), phi3 (fused QKV and
gate-up), qwen2moe (shared expert), deepseek2 (multi-head latent attention, lite and
with a Q LoRA, shared experts, leading dense layers), glm4moe, gpt-oss (MXFP4 experts,
attention sinks, sliding-window layers), and embedding and
reranker models (qwen3 and bert with a pooling type).

The files carry the metadata llama.cpp needs to load them (hyperparameters, a
byte-level BPE vocabulary or, for bert, a WordPiece one, special tokens), so they can
be used to start real backends as well as to test the header parser and the memory
estimator::

    paths = write_tiny_model(tmp_path / "tiny.gguf", arch="qwen2", n_layer=2)
    paths = write_tiny_model(tmp_path / "moe.gguf", n_expert=4, n_expert_used=2)
    paths = write_tiny_model(tmp_path / "embed.gguf", arch="bert", pooling="mean")
    paths = write_tiny_model(tmp_path / "rerank.gguf", arch="qwen3", pooling="rank", n_cls_out=2)

``header_only=True`` writes only the header (no tensor data), which is how a
70B-shaped file can be made in milliseconds; parse it with ``PartialFileSource``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from gguf import (
    ExpertGatingFuncType,
    GGMLQuantizationType,
    GGUFWriter,
    LlamaFileType,
    PoolingType,
    TokenType,
)
from gguf.quants import quant_shape_to_byte_shape, quantize

Q = GGMLQuantizationType
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen3-Reranker's prompt (llama.cpp's converter writes it as tokenizer.chat_template.rerank)
QWEN3_RERANK_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query"
    ' and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that"
    " answer the query\n<Query>: {query}\n<Document>: {document}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0 to 4
ARCHITECTURES = (
    "llama",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "bert",
    "nomic-bert",
    "mistral3",
    "gemma2",
    "gemma3",
    "phi3",
    "qwen2moe",
    "deepseek2",
    "glm4moe",
    "gpt-oss",
    "lfm2",
    "granitehybrid",
)  # mistral3: llama's tensors
GEMMA = ("gemma2", "gemma3")
POOLING_TYPES = ("none", "mean", "cls", "last", "rank")
RANK_ARCHITECTURES = ("qwen3", "bert")
ENCODERS = ("bert", "nomic-bert")  # non-causal, WordPiece vocabularies
_LETTERS = "etaoinshrdlucmfwypvbgkjqxz"
_MIN_VOCAB = {arch: len(WORDPIECE_SPECIALS) + 2 * len(_LETTERS) for arch in ENCODERS}
_MIN_BPE_VOCAB = 256 + len(SPECIAL_TOKENS) + 1
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
    the feed-forward blocks become Mixtral-style experts of size ``n_ff`` (llama).
    ``arch="qwen3moe"`` (needs ``n_expert``) is qwen3's attention with experts of size
    ``n_ff`` (``expert_feed_forward_length``); its ``feed_forward_length`` is
    ``n_ff * n_expert_used``, as in Qwen3-30B-A3B (6144 = 768 * 8), which llama.cpp ignores.
    Matrices use ``weight_type``; norms, biases and bert's ``token_types`` are F32.

    ``arch="gemma2"`` / ``"gemma3"``: gemma's blocks (post-attention and post-FFN norms,
    gemma3's Q/K norms), tied embeddings for gemma2 (its loader reads no ``output.weight``);
    ``sliding_window`` makes the layers of llama.cpp's default pattern (gemma2 every
    other layer, gemma3 five of six) sliding-window layers with their own cache.

    ``arch="phi3"``: a fused ``attn_qkv`` and a fused gate-and-up ``ffn_up`` (2 x ``n_ff``);
    ``arch="qwen2moe"``: qwen2's attention (biases) with experts of ``n_ff`` and a shared
    expert of ``n_ff_shexp`` behind a sigmoid gate.

    ``arch="deepseek2"``: multi-head latent attention as current converters write it
    (``attn_k_b``/``attn_v_b`` split): ``kv_lora_rank`` wide compressed K/V plus ``n_rot``
    RoPE dims (one cached row of ``kv_lora_rank + n_rot`` per cell), heads of
    ``key_length`` (no-RoPE part ``key_length - n_rot``) and ``value_head`` values;
    ``q_lora_rank`` 0 is the lite variant (one ``attn_q``). The first ``n_dense_lead``
    layers have a dense FFN of ``n_ff``, the others ``n_expert`` experts of ``n_ff_exp``
    and ``n_expert_shared`` shared ones (one ungated FFN ``n_ff_exp * n_expert_shared``
    wide); ``gating`` ``"sigmoid"`` adds V3's selection bias ``exp_probs_b``.

    ``arch="glm4moe"``: GLM-4.5's blocks: attention biases, RoPE on ``n_rot`` of each
    ``key_length`` head, one norm after attention (``post_attention_norm``), then the
    FFN as deepseek2's (``n_dense_lead`` dense layers, experts of ``n_ff_exp``,
    ``n_expert_shared`` shared ones, sigmoid gating with ``exp_probs_b``). For both,
    ``n_nextn`` adds that many multi-token-prediction blocks after the ``n_layer`` (a
    decoder block plus ``nextn.*``; ``block_count`` counts them, llama.cpp skips them).

    ``arch="gpt-oss"``: attention biases and sinks, an output bias, one norm after
    attention, ``n_expert`` experts of ``n_ff_exp`` with biases (in ``expert_type``,
    MXFP4 as OpenAI ships them), every other layer sliding-window (``sliding_window``).

    ``arch="lfm2"``: LFM2's hybrid blocks: a layer whose ``n_head_kv`` is 0 is a short
    convolution (``shortconv.in_proj`` 3 x n_embd wide, a depthwise ``shortconv.conv`` of
    ``l_cache`` taps, ``shortconv.out_proj``), the others attention with Q/K norms; each
    with a dense SwiGLU FFN; the output norm is named ``token_embd_norm`` as LFM2's
    converter writes it.

    ``arch="granitehybrid"`` (granite-hybrid): Granite-4.0-H's blocks: a layer whose
    ``n_head_kv`` is 0 is a Mamba-2 mixer (d_inner = 2 x n_embd in ``ssm_n_head`` heads,
    ``ssm_d_state``, ``ssm_n_group`` groups, a ``ssm_d_conv``-tap convolution), the others
    attention; a
    dense SwiGLU FFN each; ``rope`` False writes ``rope.scaling.finetuned`` false (NoPE, as
    Granite-4.0-H ships), ``residual_scale`` / ``logit_scale`` granite's multipliers.

    ``arch="bert"`` is an encoder (non-causal, WordPiece vocabulary, learned positions
    for ``n_ctx_train`` tokens, every head its own K/V: ``n_head_kv`` is ignored).
    ``arch="nomic-bert"``: nomic-embed-text's encoder: no position embeddings (RoPE), one
    fused ``attn_qkv``, no biases but the norms', a SwiGLU FFN (``ffn_gate``).
    ``pooling`` writes ``{arch}.pooling_type``; ``"rank"`` (qwen3 and bert only) adds
    the classifier head llama.cpp's rerankers use, of ``n_cls_out`` outputs, and
    ``{arch}.classifier.output_labels`` (llama.cpp's ``n_cls_out`` is their count).
    """

    arch: str = "llama"
    name: str = "tiny"
    n_layer: int = 2  # block_count
    n_embd: int = 64  # embedding_length
    n_head: int = 4  # attention.head_count
    n_head_kv: int | Sequence[int] = 2  # attention.head_count_kv
    n_ff: int | Sequence[int] = 128  # feed_forward_length
    n_vocab: int = 320  # tokenizer.ggml.tokens (at least 260; bert 57)
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
    key_length: int | None = None  # attention.key_length/value_length; default n_embd/n_head
    norm_eps: float = 1e-12  # attention.layer_norm_epsilon (bert)
    n_token_types: int = 2  # tokenizer.ggml.token_type_count (bert)
    pooling: str | None = None  # pooling_type: none, mean, cls, last or rank
    n_cls_out: int = 1  # classifier.output_labels (only with pooling "rank")
    attn_softcap: float | None = None  # attn_logit_softcapping (gemma2)
    final_softcap: float | None = None  # final_logit_softcapping (gemma2, gemma3)
    n_ff_shexp: int = 0  # expert_shared_feed_forward_length (qwen2moe's shared expert)
    # deepseek2 (multi-head latent attention)
    q_lora_rank: int = 0  # attention.q_lora_rank (0: lite, one attn_q)
    kv_lora_rank: int = 0  # attention.kv_lora_rank
    n_rot: int | None = None  # rope.dimension_count; default the head size
    value_head: int | None = None  # attention.value_length_mla
    n_ff_exp: int = 0  # expert_feed_forward_length
    n_expert_shared: int = 0  # expert_shared_count
    n_dense_lead: int = 0  # leading_dense_block_count
    gating: str = "softmax"  # expert_gating_func: softmax or sigmoid (with exp_probs_b)
    expert_weights_norm: bool = False
    expert_weights_scale: float = 1.0
    expert_type: GGMLQuantizationType | None = None  # *_exps; default weight_type (gpt-oss)
    n_nextn: int = 0  # nextn_predict_layers: MTP blocks after the n_layer (deepseek2, glm4moe)
    l_cache: int = 3  # shortconv.l_cache: the short convolution's taps (lfm2)
    # granite-hybrid's Mamba-2 layers (ssm.*) and multipliers
    ssm_n_head: int = 0  # ssm.time_step_rank
    ssm_d_state: int = 0  # ssm.state_size
    ssm_n_group: int = 1  # ssm.group_count
    ssm_d_conv: int = 4  # ssm.conv_kernel
    rope: bool = True  # rope.scaling.finetuned (granite-hybrid: off is NoPE)
    residual_scale: float | None = None
    logit_scale: float | None = None

    @property
    def head_dim(self) -> int:
        return self.key_length or self.n_embd // self.n_head

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
    if spec.key_length is None and spec.n_embd % spec.n_head:
        raise ValueError("n_embd must be a multiple of n_head")
    if spec.n_vocab < _MIN_VOCAB.get(spec.arch, _MIN_BPE_VOCAB):
        minimum = _MIN_VOCAB.get(spec.arch, _MIN_BPE_VOCAB)
        raise ValueError(f"n_vocab must be at least {minimum} for {spec.arch} (see its vocab)")
    if spec.n_expert and not 0 < spec.n_expert_used <= spec.n_expert:
        raise ValueError("n_expert_used must be between 1 and n_expert")
    if spec.arch in ("qwen3", *ENCODERS) and spec.n_expert:
        raise ValueError(f"llama.cpp's {spec.arch} has no experts (qwen3moe is another arch)")
    if spec.arch == "qwen3moe" and not (spec.n_expert and isinstance(spec.n_ff, int)):
        raise ValueError("qwen3moe needs n_expert and n_expert_used, and one n_ff for all layers")
    if spec.arch == "gemma2" and not spec.tied_embeddings:
        raise ValueError("llama.cpp's gemma2 reads no output.weight: set tied_embeddings")
    if spec.arch in GEMMA and spec.n_expert:
        raise ValueError(f"llama.cpp's {spec.arch} has no experts")
    if spec.arch == "qwen2moe" and not (spec.n_expert and spec.n_ff_shexp):
        raise ValueError("qwen2moe needs n_expert, n_expert_used and n_ff_shexp")
    if spec.arch in ("phi3", "qwen2moe") and spec.key_length is not None:
        raise ValueError(f"llama.cpp's {spec.arch} wants n_embd / n_head heads")
    if spec.arch == "gpt-oss" and not (spec.n_expert and spec.n_ff_exp and spec.sliding_window):
        raise ValueError("gpt-oss needs n_expert, n_expert_used, n_ff_exp and sliding_window")
    if spec.arch in ("lfm2", "granitehybrid"):
        _check_hybrid(spec)
    if spec.n_nextn and spec.arch not in ("deepseek2", "glm4moe"):
        raise ValueError("n_nextn: only deepseek2 and glm4moe have multi-token-prediction blocks")
    if spec.arch == "glm4moe" and not (spec.n_expert and spec.n_ff_exp and spec.n_expert_shared):
        raise ValueError("glm4moe needs n_expert, n_expert_used, n_ff_exp and n_expert_shared")
    if spec.arch == "deepseek2" and not _mla_complete(spec):
        raise ValueError(
            "deepseek2 needs kv_lora_rank, key_length, n_rot, value_head, n_expert, "
            "n_ff_exp and n_expert_shared"
        )
    if spec.arch in ENCODERS and spec.key_length is not None:
        raise ValueError("bert's head size is n_embd / n_head: leave key_length unset")
    _check_pooling(spec)


def _check_hybrid(spec: TinyModelSpec) -> None:
    """llama_model_lfm2's and llama_model_granite_hybrid's loaders: heads n_embd / n_head
    wide, lfm2's FFN dense, a short convolution of at least two taps, SSM heads that
    divide d_inner (2 x n_embd)."""
    if spec.key_length is not None or (spec.n_expert and spec.arch == "lfm2"):
        raise ValueError(f"{spec.arch}'s heads are n_embd / n_head wide (lfm2: a dense FFN)")
    if spec.arch == "granitehybrid" and not (
        spec.ssm_n_head and spec.ssm_d_state and 2 * spec.n_embd % spec.ssm_n_head == 0
    ):
        raise ValueError("granite-hybrid needs ssm_n_head (dividing 2 x n_embd) and ssm_d_state")
    if isinstance(spec.n_head_kv, int) or not all(isinstance(n, int) for n in spec.n_head_kv):
        raise ValueError("lfm2 needs n_head_kv per layer (0: a short-convolution layer)")
    if len(spec.n_head_kv) != spec.n_layer or spec.l_cache < 2:
        raise ValueError("lfm2 needs one n_head_kv per layer and l_cache of at least 2")


def _mla_complete(spec: TinyModelSpec) -> bool:
    needed = (spec.kv_lora_rank, spec.key_length, spec.n_rot, spec.value_head, spec.n_expert)
    return all(needed) and bool(spec.n_ff_exp and spec.n_expert_shared)


def _check_pooling(spec: TinyModelSpec) -> None:
    if spec.pooling is not None and spec.pooling not in POOLING_TYPES:
        raise ValueError(f"pooling must be one of {POOLING_TYPES} or None, not {spec.pooling!r}")
    if spec.pooling == "rank" and spec.arch not in RANK_ARCHITECTURES:
        raise ValueError(f"pooling 'rank' needs a classifier head: arch in {RANK_ARCHITECTURES}")
    if spec.n_cls_out < 1 or (spec.n_cls_out != 1 and spec.pooling != "rank"):
        raise ValueError("n_cls_out must be at least 1, and other than 1 only with pooling 'rank'")


def _add_hparams(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    writer.add_name(spec.name)
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer + spec.n_nextn)
    if spec.arch in ("qwen3moe", "qwen2moe"):  # a dense width llama.cpp never uses for them
        writer.add_feed_forward_length(spec.per_layer(spec.n_ff, 0) * spec.n_expert_used)
    else:
        writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    if spec.arch in ENCODERS:
        writer.add_layer_norm_eps(spec.norm_eps)
        writer.add_causal_attention(False)
        if spec.arch == "nomic-bert":
            writer.add_rope_freq_base(spec.rope_freq_base)
    else:
        _add_decoder_hparams(writer, spec)
    _add_pooling(writer, spec)
    file_type = _FILE_TYPES.get(spec.weight_type)
    if file_type is not None:
        writer.add_file_type(int(file_type))
    writer.add_quantization_version(2)


def _add_decoder_hparams(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    if spec.arch == "deepseek2":
        _add_mla_hparams(writer, spec)
        return
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_rope_dimension_count(spec.n_rot or spec.head_dim)
    if spec.arch in ("qwen3", "qwen3moe", *GEMMA) or spec.key_length is not None:
        writer.add_key_length(spec.head_dim)
        writer.add_value_length(spec.head_dim)
    if spec.n_expert:
        writer.add_expert_count(spec.n_expert)
        writer.add_expert_used_count(spec.n_expert_used)
    if spec.arch in ("qwen3moe", "qwen2moe"):
        writer.add_expert_feed_forward_length(spec.per_layer(spec.n_ff, 0))
    if spec.n_ff_shexp:
        writer.add_expert_shared_feed_forward_length(spec.n_ff_shexp)
    if spec.arch == "glm4moe":
        _add_shared_moe_hparams(writer, spec)
    if spec.arch == "lfm2":
        writer.add_shortconv_l_cache(spec.l_cache)
    if spec.arch == "granitehybrid":
        _add_granite_hybrid_hparams(writer, spec)
    if spec.arch == "gpt-oss":
        writer.add_expert_feed_forward_length(spec.n_ff_exp)
    if spec.sliding_window is not None:
        writer.add_sliding_window(spec.sliding_window)
    if spec.attn_softcap is not None:
        writer.add_attn_logit_softcapping(spec.attn_softcap)
    if spec.final_softcap is not None:
        writer.add_final_logit_softcapping(spec.final_softcap)


def _add_granite_hybrid_hparams(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    writer.add_ssm_conv_kernel(spec.ssm_d_conv)
    writer.add_ssm_inner_size(2 * spec.n_embd)
    writer.add_ssm_state_size(spec.ssm_d_state)
    writer.add_ssm_time_step_rank(spec.ssm_n_head)
    writer.add_ssm_group_count(spec.ssm_n_group)
    writer.add_rope_scaling_finetuned(spec.rope)
    if spec.residual_scale is not None:
        writer.add_residual_scale(spec.residual_scale)
    if spec.logit_scale is not None:
        writer.add_logit_scale(spec.logit_scale)


def _add_mla_hparams(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    """deepseek2's keys as convert_hf_to_gguf.py writes them for MLA: the cache's head
    (one, ``kv_lora_rank + n_rot`` wide, V its first ``kv_lora_rank``) as key/value_length,
    the decompressed heads as key/value_length_mla."""
    assert spec.n_rot is not None and spec.value_head is not None
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_rope_dimension_count(spec.n_rot)
    writer.add_key_length(spec.kv_lora_rank + spec.n_rot)
    writer.add_value_length(spec.kv_lora_rank)
    writer.add_key_length_mla(spec.head_dim)
    writer.add_value_length_mla(spec.value_head)
    writer.add_q_lora_rank(spec.q_lora_rank)
    writer.add_kv_lora_rank(spec.kv_lora_rank)
    writer.add_expert_count(spec.n_expert)
    writer.add_expert_used_count(spec.n_expert_used)
    _add_shared_moe_hparams(writer, spec)


def _add_shared_moe_hparams(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    """deepseek2's and glm4moe's experts: leading dense layers, shared experts, gating,
    and their multi-token-prediction blocks."""
    if spec.n_nextn:
        writer.add_nextn_predict_layers(spec.n_nextn)
    writer.add_leading_dense_block_count(spec.n_dense_lead)
    writer.add_expert_feed_forward_length(spec.n_ff_exp)
    writer.add_expert_shared_count(spec.n_expert_shared)
    writer.add_expert_weights_scale(spec.expert_weights_scale)
    writer.add_expert_weights_norm(spec.expert_weights_norm)
    writer.add_expert_gating_func(ExpertGatingFuncType[spec.gating.upper()])


def _add_pooling(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    if spec.pooling is None:
        return
    writer.add_pooling_type(PoolingType[spec.pooling.upper()])
    if spec.pooling == "rank":
        writer.add_classifier_output_labels(classifier_labels(spec))


def classifier_labels(spec: TinyModelSpec) -> list[str]:
    """Labels of the reranker's outputs: Qwen3-Reranker's ``yes``/``no`` for a qwen3 with
    two, else ``LABEL_0``... as transformers names unnamed ones (bge-reranker has one)."""
    if spec.arch == "qwen3" and spec.n_cls_out == 2:
        return ["yes", "no"]
    return [f"LABEL_{index}" for index in range(spec.n_cls_out)]


def _add_vocab(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    if spec.arch in ENCODERS:
        _add_wordpiece_vocab(writer, spec)
    else:
        _add_bpe_vocab(writer, spec)
    if spec.chat_template:
        writer.add_chat_template(spec.chat_template)
    if spec.arch == "qwen3" and spec.pooling == "rank":
        writer.add_chat_template([{"name": "rerank", "template": QWEN3_RERANK_TEMPLATE}])


def _add_bpe_vocab(writer: GGUFWriter, spec: TinyModelSpec) -> None:
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


def _add_wordpiece_vocab(writer: GGUFWriter, spec: TinyModelSpec) -> None:
    """BERT's vocabulary as llama.cpp's converter writes it: word pieces in phantom-space
    form, [CLS] as BOS (llama.cpp reads no cls_token_id), [SEP] added after the text."""
    n_special = len(WORDPIECE_SPECIALS)
    pad, unk, cls, sep, mask = range(n_special)
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tiny_wordpiece_vocab(spec.n_vocab))
    writer.add_token_types(
        [TokenType.CONTROL] * n_special + [TokenType.NORMAL] * (spec.n_vocab - n_special)
    )
    writer.add_token_type_count(spec.n_token_types)
    writer.add_bos_token_id(cls)
    writer.add_sep_token_id(sep)
    writer.add_pad_token_id(pad)
    writer.add_unk_token_id(unk)
    writer.add_mask_token_id(mask)
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)


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


def tiny_wordpiece_vocab(n_vocab: int) -> list[str]:
    """A WordPiece vocabulary of ``n_vocab`` tokens: the specials, then letter sequences,
    shortest first, each as a word start (``"▁ab"``, llama.cpp's form of ``"ab"``) and
    as a continuation (``"ab"``, BERT's ``"##ab"``)."""
    pieces = islice(_word_pieces(), n_vocab - len(WORDPIECE_SPECIALS))
    return [*WORDPIECE_SPECIALS, *pieces]


def _word_pieces() -> Iterator[str]:
    queue = deque(_LETTERS)
    while queue:
        word = queue.popleft()
        yield "\u2581" + word
        yield word
        queue.extend(word + letter for letter in _LETTERS)


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
    if spec.arch in ENCODERS:
        yield from _encoder_tensors(spec)
        return
    embd_type = spec.embedding_type or spec.weight_type
    yield "token_embd.weight", (spec.n_embd, spec.n_vocab), embd_type
    for layer in range(spec.n_layer + spec.n_nextn):
        for name, ne, qtype in _block_tensors(spec, layer):
            yield f"blk.{layer}.{name}", ne, qtype
        if layer >= spec.n_layer:
            yield from _nextn_tensors(spec, layer)
    output_norm = "token_embd_norm.weight" if spec.arch == "lfm2" else "output_norm.weight"
    yield output_norm, (spec.n_embd,), Q.F32
    if not spec.tied_embeddings:
        yield "output.weight", (spec.n_embd, spec.n_vocab), spec.output_type or spec.weight_type
    if spec.pooling == "rank":
        yield from _classifier_tensors(spec)


def _block_tensors(spec: TinyModelSpec, layer: int) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    if spec.arch == "deepseek2":
        yield from _mla_block_tensors(spec, layer)
        return
    if spec.arch == "gpt-oss":
        yield from _gpt_oss_block_tensors(spec)
        return
    if spec.arch == "lfm2":
        yield from _lfm2_block_tensors(spec, layer)
        return
    if spec.arch == "granitehybrid":
        yield from _granite_hybrid_block_tensors(spec, layer)
        return
    embd, wtype = spec.n_embd, spec.weight_type
    q_dim = spec.n_head * spec.head_dim
    kv_dim = spec.per_layer(spec.n_head_kv, layer) * spec.head_dim
    yield "attn_norm.weight", (embd,), Q.F32
    if spec.arch == "phi3":  # one fused matrix, as Phi-3's converter writes it
        yield "attn_qkv.weight", (embd, q_dim + 2 * kv_dim), wtype
    else:
        yield "attn_q.weight", (embd, q_dim), wtype
        yield "attn_k.weight", (embd, kv_dim), wtype
        yield "attn_v.weight", (embd, kv_dim), wtype
    if spec.arch in ("qwen2", "qwen2moe", "glm4moe"):
        yield "attn_q.bias", (q_dim,), Q.F32
        yield "attn_k.bias", (kv_dim,), Q.F32
        yield "attn_v.bias", (kv_dim,), Q.F32
    if spec.arch in ("qwen3", "qwen3moe", "gemma3"):
        yield "attn_q_norm.weight", (spec.head_dim,), Q.F32
        yield "attn_k_norm.weight", (spec.head_dim,), Q.F32
    yield "attn_output.weight", (q_dim, embd), wtype
    if spec.arch in (*GEMMA, "glm4moe"):
        yield "post_attention_norm.weight", (embd,), Q.F32
    if spec.arch == "glm4moe":  # its only norm before the FFN is post_attention_norm
        yield from _shared_moe_tensors(spec, layer)
        return
    yield "ffn_norm.weight", (embd,), Q.F32
    yield from _ffn_tensors(spec, layer)
    if spec.arch in GEMMA:
        yield "post_ffw_norm.weight", (embd,), Q.F32


def _lfm2_block_tensors(
    spec: TinyModelSpec, layer: int
) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    """lfm2's block (llama_model_lfm2::load_arch_tensors): the FFN, the operator norm,
    then attention (a layer with KV heads) or the short convolution (F32 kernel, as
    LFM2's converter keeps it)."""
    embd, wtype = spec.n_embd, spec.weight_type
    yield "ffn_norm.weight", (embd,), Q.F32
    yield from _ffn_tensors(spec, layer)
    yield "attn_norm.weight", (embd,), Q.F32
    n_head_kv = spec.per_layer(spec.n_head_kv, layer)
    if not n_head_kv:
        yield "shortconv.conv.weight", (spec.l_cache, embd), Q.F32
        yield "shortconv.in_proj.weight", (embd, 3 * embd), wtype
        yield "shortconv.out_proj.weight", (embd, embd), wtype
        return
    yield "attn_q_norm.weight", (spec.head_dim,), Q.F32
    yield "attn_k_norm.weight", (spec.head_dim,), Q.F32
    yield "attn_q.weight", (embd, embd), wtype
    yield "attn_k.weight", (embd, n_head_kv * spec.head_dim), wtype
    yield "attn_v.weight", (embd, n_head_kv * spec.head_dim), wtype
    yield "attn_output.weight", (embd, embd), wtype


def _granite_hybrid_block_tensors(
    spec: TinyModelSpec, layer: int
) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    """granite-hybrid's block (llama_model_granite_hybrid::load_arch_tensors): the norm,
    Mamba-2 (no KV heads: F32 conv kernel, biases, A, D and norm) or attention, the FFN."""
    embd, wtype, n_kv = spec.n_embd, spec.weight_type, spec.per_layer(spec.n_head_kv, layer)
    d_inner, n_head, groups = 2 * embd, spec.ssm_n_head, spec.ssm_n_group * spec.ssm_d_state
    yield "attn_norm.weight", (embd,), Q.F32
    if n_kv:
        yield "attn_q.weight", (embd, embd), wtype
        yield "attn_k.weight", (embd, n_kv * spec.head_dim), wtype
        yield "attn_v.weight", (embd, n_kv * spec.head_dim), wtype
        yield "attn_output.weight", (embd, embd), wtype
    else:
        yield "ssm_in.weight", (embd, 2 * d_inner + 2 * groups + n_head), wtype
        yield "ssm_conv1d.weight", (spec.ssm_d_conv, d_inner + 2 * groups), Q.F32
        yield "ssm_conv1d.bias", (d_inner + 2 * groups,), Q.F32
        yield "ssm_dt.bias", (n_head,), Q.F32
        yield "ssm_a", (1, n_head), Q.F32
        yield "ssm_d", (1, n_head), Q.F32
        yield "ssm_norm.weight", (d_inner // spec.ssm_n_group, spec.ssm_n_group), Q.F32
        yield "ssm_out.weight", (d_inner, embd), wtype
    yield "ffn_norm.weight", (embd,), Q.F32
    yield from _ffn_tensors(spec, layer)


def _nextn_tensors(spec: TinyModelSpec, layer: int) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    """A multi-token-prediction block's own tensors (after its decoder block's)."""
    embd = spec.n_embd
    yield f"blk.{layer}.nextn.eh_proj.weight", (2 * embd, embd), spec.weight_type
    for name in ("enorm", "hnorm", "shared_head_norm"):
        yield f"blk.{layer}.nextn.{name}.weight", (embd,), Q.F32


def _gpt_oss_block_tensors(spec: TinyModelSpec) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    """gpt-oss's block (llama_model_openai_moe::load_arch_tensors)."""
    embd, wtype, n_head = spec.n_embd, spec.weight_type, spec.n_head
    q_dim, kv_dim = n_head * spec.head_dim, spec.per_layer(spec.n_head_kv, 0) * spec.head_dim
    yield "attn_norm.weight", (embd,), Q.F32
    for role, width in (("q", q_dim), ("k", kv_dim), ("v", kv_dim)):
        yield f"attn_{role}.weight", (embd, width), wtype
        yield f"attn_{role}.bias", (width,), Q.F32
    yield "attn_output.weight", (q_dim, embd), wtype
    yield "attn_output.bias", (embd,), Q.F32
    yield "attn_sinks.weight", (n_head,), Q.F32
    yield "post_attention_norm.weight", (embd,), Q.F32
    n_exp, n_ff, etype = spec.n_expert, spec.n_ff_exp, spec.expert_type or wtype
    yield "ffn_gate_inp.weight", (embd, n_exp), Q.F32
    yield "ffn_gate_inp.bias", (n_exp,), Q.F32
    yield "ffn_gate_exps.weight", (embd, n_ff, n_exp), etype
    yield "ffn_gate_exps.bias", (n_ff, n_exp), Q.F32
    yield "ffn_down_exps.weight", (n_ff, embd, n_exp), etype
    yield "ffn_down_exps.bias", (embd, n_exp), Q.F32
    yield "ffn_up_exps.weight", (embd, n_ff, n_exp), etype
    yield "ffn_up_exps.bias", (n_ff, n_exp), Q.F32


def _mla_block_tensors(spec: TinyModelSpec, layer: int) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    """deepseek2's block (llama_model_deepseek2::load_arch_tensors, MLA with k_b/v_b)."""
    assert spec.n_rot is not None and spec.value_head is not None
    embd, wtype, n_head = spec.n_embd, spec.weight_type, spec.n_head
    q_lora, kv_lora, nope = spec.q_lora_rank, spec.kv_lora_rank, spec.head_dim - spec.n_rot
    yield "attn_norm.weight", (embd,), Q.F32
    if q_lora:
        yield "attn_q_a_norm.weight", (q_lora,), Q.F32
    yield "attn_kv_a_norm.weight", (kv_lora,), Q.F32
    if q_lora:
        yield "attn_q_a.weight", (embd, q_lora), wtype
        yield "attn_q_b.weight", (q_lora, n_head * spec.head_dim), wtype
    else:
        yield "attn_q.weight", (embd, n_head * spec.head_dim), wtype
    yield "attn_kv_a_mqa.weight", (embd, kv_lora + spec.n_rot), wtype
    yield "attn_k_b.weight", (nope, kv_lora, n_head), wtype
    yield "attn_v_b.weight", (kv_lora, spec.value_head, n_head), wtype
    yield "attn_output.weight", (n_head * spec.value_head, embd), wtype
    yield "ffn_norm.weight", (embd,), Q.F32
    yield from _shared_moe_tensors(spec, layer)


def _shared_moe_tensors(
    spec: TinyModelSpec, layer: int
) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    """deepseek2's and glm4moe's FFN: dense in the leading layers, else routed experts
    (with the selection bias of sigmoid gating) and the shared ones as one FFN."""
    embd, wtype = spec.n_embd, spec.weight_type
    if layer < spec.n_dense_lead:
        yield from _ffn_tensors(replace(spec, n_expert=0), layer)
        return
    n_exp, n_ff, n_shexp = spec.n_expert, spec.n_ff_exp, spec.n_ff_exp * spec.n_expert_shared
    yield "ffn_gate_inp.weight", (embd, n_exp), Q.F32
    if spec.gating == "sigmoid":
        yield "exp_probs_b.bias", (n_exp,), Q.F32
    yield "ffn_gate_exps.weight", (embd, n_ff, n_exp), wtype
    yield "ffn_down_exps.weight", (n_ff, embd, n_exp), wtype
    yield "ffn_up_exps.weight", (embd, n_ff, n_exp), wtype
    yield "ffn_gate_shexp.weight", (embd, n_shexp), wtype
    yield "ffn_down_shexp.weight", (n_shexp, embd), wtype
    yield "ffn_up_shexp.weight", (embd, n_shexp), wtype


def _ffn_tensors(spec: TinyModelSpec, layer: int) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    embd, wtype, n_ff = spec.n_embd, spec.weight_type, spec.per_layer(spec.n_ff, layer)
    if spec.n_expert:
        n_exp = spec.n_expert
        yield "ffn_gate_inp.weight", (embd, n_exp), Q.F32
        yield "ffn_gate_exps.weight", (embd, n_ff, n_exp), wtype
        yield "ffn_down_exps.weight", (n_ff, embd, n_exp), wtype
        yield "ffn_up_exps.weight", (embd, n_ff, n_exp), wtype
        if spec.n_ff_shexp and spec.arch == "qwen2moe":  # its shared expert's gate
            yield "ffn_gate_inp_shexp.weight", (embd,), Q.F32
        if spec.n_ff_shexp:
            yield "ffn_gate_shexp.weight", (embd, spec.n_ff_shexp), wtype
            yield "ffn_down_shexp.weight", (spec.n_ff_shexp, embd), wtype
            yield "ffn_up_shexp.weight", (embd, spec.n_ff_shexp), wtype
        return
    if spec.arch == "phi3":  # gate and up in one matrix
        yield "ffn_down.weight", (n_ff, embd), wtype
        yield "ffn_up.weight", (embd, 2 * n_ff), wtype
        return
    yield "ffn_gate.weight", (embd, n_ff), wtype
    yield "ffn_down.weight", (n_ff, embd), wtype
    yield "ffn_up.weight", (embd, n_ff), wtype


def _encoder_tensors(spec: TinyModelSpec) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    embd, embd_type = spec.n_embd, spec.embedding_type or spec.weight_type
    yield "token_embd.weight", (embd, spec.n_vocab), embd_type
    yield "token_types.weight", (embd, spec.n_token_types), Q.F32
    if spec.arch == "bert":  # nomic-bert: RoPE instead
        yield "position_embd.weight", (embd, spec.n_ctx_train), embd_type
    yield from _norm("token_embd_norm", embd)
    for layer in range(spec.n_layer):
        for name, ne, qtype in _encoder_block_tensors(spec, layer):
            yield f"blk.{layer}.{name}", ne, qtype
    if spec.pooling == "rank":
        yield from _classifier_tensors(spec)


def _encoder_block_tensors(
    spec: TinyModelSpec, layer: int
) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    embd, wtype, n_ff = spec.n_embd, spec.weight_type, spec.per_layer(spec.n_ff, layer)
    if spec.arch == "nomic-bert":
        yield from _nomic_block_tensors(spec, layer)
        return
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        yield from _linear(name, embd, embd, wtype)
    yield from _norm("attn_output_norm", embd)
    yield from _linear("ffn_up", embd, n_ff, wtype)
    yield from _linear("ffn_down", n_ff, embd, wtype)
    yield from _norm("layer_output_norm", embd)


def _nomic_block_tensors(
    spec: TinyModelSpec, layer: int
) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    """llama_model_nomic_bert::load_arch_tensors: fused QKV, SwiGLU, no biases."""
    embd, wtype, n_ff = spec.n_embd, spec.weight_type, spec.per_layer(spec.n_ff, layer)
    yield "attn_qkv.weight", (embd, 3 * embd), wtype
    yield "attn_output.weight", (embd, embd), wtype
    yield from _norm("attn_output_norm", embd)
    yield "ffn_up.weight", (embd, n_ff), wtype
    yield "ffn_gate.weight", (embd, n_ff), wtype
    yield "ffn_down.weight", (n_ff, embd), wtype
    yield from _norm("layer_output_norm", embd)


def _classifier_tensors(spec: TinyModelSpec) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    """bert: a dense layer (tanh) then the output projection; qwen3: the projection only
    (Qwen3-Reranker's rows of the LM head), then llama.cpp applies a softmax."""
    embd, wtype = spec.n_embd, spec.weight_type
    if spec.arch == "bert":
        yield from _linear("cls", embd, embd, wtype)
        yield from _linear("cls.output", embd, spec.n_cls_out, wtype)
        return
    yield "cls.output.weight", (embd, spec.n_cls_out), spec.output_type or wtype


def _linear(name: str, n_in: int, n_out: int, qtype: Q) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    yield f"{name}.weight", (n_in, n_out), qtype
    yield f"{name}.bias", (n_out,), Q.F32


def _norm(name: str, n_embd: int) -> Iterator[tuple[str, tuple[int, ...], Q]]:
    yield f"{name}.weight", (n_embd,), Q.F32
    yield f"{name}.bias", (n_embd,), Q.F32


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
    if name.endswith("norm.bias"):
        return np.zeros(shape, dtype=np.float32)
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
