"""The accuracy matrix: tiny real models and run settings that the estimator is
checked against llama.cpp with (tests/estimator and bench/estimator share it).

Models: llama with GQA, qwen2 with attention biases, a Mixtral-style MoE, a llama
with tied embeddings, a deeper llama, qwen3 (Q/K norms, 128-wide heads wider than
n_embd / n_head, tied embeddings) and qwen3moe (8 experts, 2 used, experts narrower
than its feed_forward_length), gemma2 (soft-capping, every other layer sliding-window),
gemma3 (Q/K norms, five of six layers sliding-window), phi3 (fused QKV and gate-up,
head_dim 96), qwen2moe (a shared expert), deepseek2 lite and full (multi-head latent
attention without and with a Q LoRA, shared experts, a leading dense layer), glm4moe
(attention biases, a post-attention norm, sigmoid-gated experts and a shared one) and
gpt-oss (attention sinks, every other layer sliding-window, MXFP4 experts with biases),
each in F32, F16, Q8_0 and Q4_0 (gpt-oss's experts always MXFP4). Settings: contexts
from 256 to 8192, K/V caches f16 and q8_0 (a q8_0 V cache
needs flash attention), 1 to 8 parallel sequences, flash attention on and off, mmap on
and off, several batch sizes, ``swa_full`` on and off (it only changes iSWA models).
Every model runs with every settings variant llama.cpp accepts for it (``supported``:
an MLA model refuses K and V caches of different types).

The hybrids lfm2 (short-convolution layers with recurrent state, attention in the
others) and granite-hybrid (Mamba-2 layers; dense and with experts) run ``VARIANTS`` and
``RECURRENT_VARIANTS`` (contexts up to 32768, micro-batches of 1024, q4_0 caches, 4
sequences in a unified cache).

Embedding and reranker models (an entry with a ``pooling`` type: bert with CLS pooling,
a bert reranker with its classifier head, nomic-bert, a qwen3 reranker and a qwen3
embedding model; 30k WordPiece vocabularies, 64-wide encoder heads) run the
``EMBEDDING_VARIANTS`` instead: embeddings on, ``n_batch = n_ubatch`` as llama-server
sets them, micro-batches 256 to 1024, contexts 512 to 4096 (700, 1000, 1536 and 3000
among them), 1, 2, 4 and 256 sequences (llama-cpp-python's embedding contexts), flash
attention on and off, ``--pooling`` mean and none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType as Q

from devtools.tiny_gguf import write_tiny_model
from models_app.estimator.settings import CacheType, RunSettings

ARCHES: dict[str, dict[str, Any]] = {
    "llama-gqa": {"n_layer": 3, "n_embd": 256, "n_head": 4, "n_head_kv": 2, "n_ff": 512},
    "qwen2-bias": {"arch": "qwen2", "n_embd": 256, "n_head": 4, "n_head_kv": 1, "n_ff": 384},
    "moe": {
        "n_embd": 128,
        "n_head": 2,
        "n_head_kv": 1,
        "n_ff": 128,
        "n_expert": 4,
        "n_expert_used": 2,
    },
    "llama-tied": {
        "n_embd": 128,
        "n_head": 4,
        "n_head_kv": 4,
        "n_ff": 256,
        "tied_embeddings": True,
        "n_vocab": 1000,
    },
    # 8 layers (the estimator simulates only some of them), 128-wide heads, 700 rows of logits
    "llama-deep": {
        "n_layer": 8,
        "n_embd": 256,
        "n_head": 2,
        "n_head_kv": 1,
        "n_ff": 512,
        "n_vocab": 700,
    },
    # Qwen3-0.6B-like: head_dim 128 with n_embd / n_head = 64, 2 query heads per KV head
    "qwen3": {
        "arch": "qwen3",
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": 2,
        "key_length": 128,
        "n_ff": 512,
        "tied_embeddings": True,
    },
    # Qwen3-30B-A3B-like: head_dim 128, experts of 128 (feed_forward_length 256), 4 layers
    # (the estimator simulates only some of them)
    "qwen3moe": {
        "arch": "qwen3moe",
        "n_layer": 4,
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": 1,
        "key_length": 128,
        "n_ff": 128,
        "n_expert": 8,
        "n_expert_used": 2,
    },
    # Gemma-2-2B-like: head_dim 128 wider than n_embd / n_head, 2 query heads per KV head,
    # every other layer a sliding-window layer (llama.cpp's default pattern), tied
    # embeddings, attention and final logit soft-capping
    "gemma2": {
        "arch": "gemma2",
        "n_layer": 4,
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": 2,
        "key_length": 128,
        "n_ff": 1024,
        "tied_embeddings": True,
        "sliding_window": 128,
        "attn_softcap": 50.0,
        "final_softcap": 30.0,
    },
    # Gemma-3-1B-like: one KV head of 128 for 4 query heads, Q/K norms, five of six layers
    # sliding-window (llama.cpp's default pattern), tied embeddings, no soft-capping
    "gemma3": {
        "arch": "gemma3",
        "n_layer": 6,
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": 1,
        "key_length": 128,
        "n_ff": 768,
        "tied_embeddings": True,
        "sliding_window": 256,
    },
    # Phi-3-mini-like: head_dim 96 (no K rotation for a quantized cache), every head its
    # own K/V, fused QKV and gate-up matrices, untied output; its sliding_window key is
    # read and switched off by llama.cpp
    "phi3": {
        "arch": "phi3",
        "n_layer": 3,
        "n_embd": 384,
        "n_head": 4,
        "n_head_kv": 4,
        "n_ff": 1024,
        "sliding_window": 2047,
    },
    # Qwen1.5-MoE-A2.7B-like: head_dim 128, attention biases, 16 experts of 160 (4 used)
    # and a shared expert 2.75x n_embd wide behind a sigmoid gate
    "qwen2moe": {
        "arch": "qwen2moe",
        "n_layer": 3,
        "n_embd": 256,
        "n_head": 2,
        "n_head_kv": 2,
        "n_ff": 160,
        "n_expert": 16,
        "n_expert_used": 4,
        "n_ff_shexp": 704,
    },
    # DeepSeek-V2-Lite-like: multi-head latent attention without a Q LoRA (heads of 128 + 64
    # RoPE dims, V 128, one cached row of 160 + 64 per cell), a leading dense layer, 16
    # experts of 192 (4 used, softmax gating) and 2 shared ones, untied output
    "deepseek2-lite": {
        "arch": "deepseek2",
        "n_layer": 3,
        "n_embd": 256,
        "n_head": 4,
        "key_length": 192,
        "n_rot": 64,
        "value_head": 128,
        "kv_lora_rank": 160,
        "n_ff": 768,
        "n_ff_exp": 192,
        "n_expert": 16,
        "n_expert_used": 4,
        "n_expert_shared": 2,
        "n_dense_lead": 1,
    },
    # DeepSeek-V3-like: a Q LoRA of 96, sigmoid gating with the selection bias, normalised
    # and scaled (2.5) expert weights, one shared expert, and a multi-token-prediction
    # block (GLM-4.7-Flash's form: llama.cpp loads none of it)
    "deepseek2": {
        "arch": "deepseek2",
        "n_layer": 3,
        "n_embd": 256,
        "n_head": 4,
        "key_length": 192,
        "n_rot": 64,
        "value_head": 128,
        "kv_lora_rank": 160,
        "q_lora_rank": 96,
        "n_nextn": 1,
        "n_ff": 768,
        "n_ff_exp": 128,
        "n_expert": 16,
        "n_expert_used": 4,
        "n_expert_shared": 1,
        "n_dense_lead": 1,
        "gating": "sigmoid",
        "expert_weights_norm": True,
        "expert_weights_scale": 2.5,
    },
    # GLM-4.5-Air-like: head_dim 128 wider than n_embd / n_head with RoPE on half of it,
    # 2 query heads per KV head, attention biases, a leading dense layer, 16 experts of
    # 192 (4 used, sigmoid gating with the selection bias, normalised and scaled weights)
    # and a shared one, untied output, a multi-token-prediction block as GLM-4.5 ships it
    "glm4moe": {
        "arch": "glm4moe",
        "n_layer": 3,
        "n_nextn": 1,
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": 2,
        "key_length": 128,
        "n_rot": 64,
        "n_ff": 768,
        "n_ff_exp": 192,
        "n_expert": 16,
        "n_expert_used": 4,
        "n_expert_shared": 1,
        "n_dense_lead": 1,
        "gating": "sigmoid",
        "expert_weights_norm": True,
        "expert_weights_scale": 2.5,
    },
    # gpt-oss-20b-like: heads of 64 (4096 wide for n_embd 2880: here 512 for 256), 4 query
    # heads per KV head, attention biases and sinks, every other layer a sliding-window
    # layer of 128, 16 MXFP4 experts of 256 with biases (4 used), untied output
    "gpt-oss": {
        "arch": "gpt-oss",
        "n_layer": 4,
        "n_embd": 256,
        "n_head": 8,
        "n_head_kv": 2,
        "key_length": 64,
        "n_ff": 256,
        "n_ff_exp": 256,
        "n_expert": 16,
        "n_expert_used": 4,
        "sliding_window": 128,
        "expert_type": Q.MXFP4,
    },
    # LFM2-1.2B-like hybrid: heads of 64, 4 query heads per KV head, an FFN 4x n_embd,
    # short-convolution layers (3 taps, no KV heads) where LFM2 has them (2 of 3 layers,
    # the last one too), tied embeddings; it runs VARIANTS and RECURRENT_VARIANTS
    "lfm2": {
        "arch": "lfm2",
        "n_layer": 6,
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": (0, 0, 1, 0, 1, 0),
        "n_ff": 1024,
        "l_cache": 3,
        "tied_embeddings": True,
        "n_vocab": 1000,
    },
    # Granite-4.0-H-Micro-like hybrid: Mamba-2 layers (d_inner 2 x n_embd in heads of 64,
    # state 128, one group, 4 taps) and one attention layer in six (4 query heads per KV
    # head of 64, no RoPE), a dense FFN 4x n_embd, residual and logit multipliers, tied
    "granite-hybrid": {
        "arch": "granitehybrid",
        "n_layer": 6,
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": (0, 0, 1, 0, 0, 0),
        "n_ff": 1024,
        "ssm_n_head": 8,
        "ssm_d_state": 128,
        "rope": False,
        "residual_scale": 0.22,
        "logit_scale": 8.0,
        "tied_embeddings": True,
        "n_vocab": 1000,
    },
    # Granite-4.0-H-Tiny-like: the same with experts (16 of 128, 4 used, softmax gating,
    # normalised weights) and an ungated shared expert of 192 in place of the dense FFN
    "granite-hybrid-moe": {
        "arch": "granitehybrid",
        "n_layer": 6,
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": (0, 0, 1, 0, 0, 0),
        "n_ff": 128,
        "n_expert": 16,
        "n_expert_used": 4,
        "n_ff_shexp": 192,
        "ssm_n_head": 8,
        "ssm_d_state": 128,
        "rope": False,
        "residual_scale": 0.22,
        "logit_scale": 8.0,
        "tied_embeddings": True,
        "n_vocab": 1000,
    },
    # embedding and reranker models (a "pooling" key): they run the EMBEDDING_VARIANTS.
    # bge-base-like: heads of 64, a 30k WordPiece vocabulary, learned positions, CLS pooling
    "bert": {
        "arch": "bert",
        "n_layer": 3,
        "n_embd": 256,
        "n_head": 4,
        "n_ff": 1024,
        "n_vocab": 30522,
        "n_ctx_train": 2048,
        "pooling": "cls",
    },
    # bge-reranker-base-like: the classifier head (dense + tanh, one output), rank pooling
    "bert-rank": {
        "arch": "bert",
        "n_layer": 3,
        "n_embd": 256,
        "n_head": 4,
        "n_ff": 1024,
        "n_vocab": 30522,
        "n_ctx_train": 2048,
        "pooling": "rank",
    },
    # nomic-embed-text-v1.5-like: RoPE, fused QKV, SwiGLU, no biases, mean pooling
    "nomic-bert": {
        "arch": "nomic-bert",
        "n_layer": 3,
        "n_embd": 256,
        "n_head": 4,
        "n_ff": 768,
        "n_vocab": 30522,
        "n_ctx_train": 2048,
        "pooling": "mean",
    },
    # Qwen3-Reranker-like: head_dim 128, the yes / no rows as a 2-output classifier, softmax
    "qwen3-rank": {
        "arch": "qwen3",
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": 2,
        "key_length": 128,
        "n_ff": 512,
        "n_ctx_train": 4096,
        "tied_embeddings": True,
        "pooling": "rank",
        "n_cls_out": 2,
    },
    # Qwen3-Embedding-like: last-token pooling
    "qwen3-embed": {
        "arch": "qwen3",
        "n_embd": 256,
        "n_head": 4,
        "n_head_kv": 2,
        "key_length": 128,
        "n_ff": 512,
        "n_ctx_train": 4096,
        "tied_embeddings": True,
        "pooling": "last",
    },
}
WEIGHT_TYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}
Q8 = CacheType.Q8_0
VARIANTS: dict[str, RunSettings] = {
    "ctx256": RunSettings(n_ctx=256),
    # swa_full off: sliding-window layers get a cache of their own size (iSWA models)
    "ctx8192-np4-fa-q8-swa": RunSettings(
        n_ctx=8192, n_seq_max=4, flash_attn=True, type_k=Q8, type_v=Q8, swa_full=False
    ),
    "ctx2048-fa-nommap": RunSettings(n_ctx=2048, flash_attn=True, use_mmap=False),
    "ctx4096-np4-k8-ub256": RunSettings(n_ctx=4096, n_seq_max=4, type_k=Q8, n_ubatch=256),
    "ctx1000-np2-b512-ub128-swa": RunSettings(
        n_ctx=1000, n_seq_max=2, n_batch=512, n_ubatch=128, swa_full=False
    ),
    "ctx8192": RunSettings(n_ctx=8192),
    "ctx5000-swa": RunSettings(n_ctx=5000, swa_full=False),
    "ctx3000-np3-unified-fa-swa": RunSettings(
        n_ctx=3000, n_seq_max=3, kv_unified=True, flash_attn=True, swa_full=False
    ),
    "ctx512-ub1": RunSettings(n_ctx=512, n_ubatch=1),
    "ctx8192-np8-fa-k4v8": RunSettings(
        n_ctx=8192, n_seq_max=8, flash_attn=True, type_k=CacheType.Q4_0, type_v=Q8
    ),
    "ctx4096-ub2048-fa": RunSettings(n_ctx=4096, n_batch=4096, n_ubatch=2048, flash_attn=True),
    "ctx1024-np4-ub2": RunSettings(n_ctx=1024, n_seq_max=4, n_ubatch=2),  # token graph decides
}
# embedding servers: llama-server sets n_batch = n_ubatch (one ubatch per request), one
# slot per sequence; contexts that are not multiples of 256, flash attention on and off,
# the model's pooling and others (--pooling)
EMBEDDING_VARIANTS: dict[str, RunSettings] = {
    f"emb-{name}": replace(settings, embeddings=True)
    for name, settings in {
        "ctx512-ub512": RunSettings(n_ctx=512, n_batch=512, n_ubatch=512),
        "ctx2048-np4-ub512-fa": RunSettings(
            n_ctx=2048, n_seq_max=4, n_batch=512, n_ubatch=512, flash_attn=True
        ),
        "ctx1000-ub1024": RunSettings(n_ctx=1000, n_batch=1024, n_ubatch=1024),
        "ctx700-np4-ub256-fa": RunSettings(
            n_ctx=700, n_seq_max=4, n_batch=256, n_ubatch=256, flash_attn=True
        ),
        "ctx4096-np4-ub1024-fa": RunSettings(
            n_ctx=4096, n_seq_max=4, n_batch=1024, n_ubatch=1024, flash_attn=True
        ),
        "ctx3000-ub1024-mean": RunSettings(n_ctx=3000, n_batch=1024, n_ubatch=1024, pooling="mean"),
        "ctx1536-np2-ub768-none": RunSettings(
            n_ctx=1536, n_seq_max=2, n_batch=768, n_ubatch=768, pooling="none"
        ),
        # llama-cpp-python's Llama(embedding=True): n_seq_max = min(n_batch, 256), unified
        "ctx512-np256-unified": RunSettings(
            n_ctx=512, n_seq_max=256, n_batch=512, n_ubatch=512, kv_unified=True
        ),
    }.items()
}
# hybrids with recurrent state (their state is per sequence, kv_unified or not): the
# rest of the grid, contexts up to 32768 that are not multiples of 256, micro-batches of
# 1024, q4_0 caches, 4 sequences in one unified cache
RECURRENT_ARCHES = frozenset({"lfm2", "granitehybrid"})
Q4 = CacheType.Q4_0
RECURRENT_VARIANTS: dict[str, RunSettings] = {
    "ctx32768-np4-ub1024-fa-q4": RunSettings(
        n_ctx=32768, n_seq_max=4, n_ubatch=1024, flash_attn=True, type_k=Q4, type_v=Q4
    ),
    "ctx20000-np4-unified-ub1024": RunSettings(
        n_ctx=20000, n_seq_max=4, kv_unified=True, n_ubatch=1024
    ),
    "ctx700-np4-unified-ub256-fa-q8": RunSettings(
        n_ctx=700, n_seq_max=4, kv_unified=True, n_ubatch=256, flash_attn=True, type_k=Q8, type_v=Q8
    ),
    "ctx1500-ub1024-k4": RunSettings(n_ctx=1500, n_ubatch=1024, type_k=Q4),
}


@dataclass(frozen=True, slots=True)
class Case:
    """One model file and one settings variant."""

    arch: str
    weight_type: str
    variant: str

    @property
    def model(self) -> str:
        return f"{self.arch}-{self.weight_type}"

    @property
    def name(self) -> str:
        return f"{self.model}/{self.variant}"

    @property
    def settings(self) -> RunSettings:
        return settings_of(self.variant)


def supported(arch: str, variant: str) -> bool:
    """Whether llama.cpp creates a context for the model with these settings: an MLA
    model (deepseek2) wants the same K and V cache types (V is a view of K)."""
    settings = settings_of(variant)
    return ARCHES[arch].get("arch") != "deepseek2" or settings.type_k is settings.type_v


def settings_of(variant: str) -> RunSettings:
    return {**VARIANTS, **EMBEDDING_VARIANTS, **RECURRENT_VARIANTS}[variant]


def variants_of(arch: str) -> dict[str, RunSettings]:
    """An embedding or reranker model (a pooling type) runs as an embedding server."""
    if ARCHES[arch].get("arch") in RECURRENT_ARCHES:
        return {**VARIANTS, **RECURRENT_VARIANTS}
    return EMBEDDING_VARIANTS if "pooling" in ARCHES[arch] else VARIANTS


def cases() -> Iterator[Case]:
    for arch in ARCHES:
        for weight_type in WEIGHT_TYPES:
            for variant in variants_of(arch):
                if supported(arch, variant):
                    yield Case(arch, weight_type, variant)


def write_models(directory: Path) -> dict[str, Path]:
    """Write every model of the matrix; returns ``{model name: path}``."""
    paths = {}
    for arch, spec in ARCHES.items():
        for label, qtype in WEIGHT_TYPES.items():
            path = directory / f"{arch}-{label}.gguf"
            (paths[f"{arch}-{label}"],) = write_tiny_model(path, weight_type=qtype, **spec)
    return paths
