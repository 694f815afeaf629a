"""The context parameters llama.cpp derives from the run settings (llama_context's
constructor in src/llama-context.cpp), the KV cache (src/llama-kv-cache.cpp,
llama-kv-cache-iswa.cpp) and the output buffer (``llama_context::output_reserve``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from models_app.estimator.attention import GraphSpec
from models_app.estimator.ggml import QUANTIZED, row_size
from models_app.estimator.settings import RunSettings
from models_app.estimator.shape import ModelShape

CTX_PAD = 256  # cparams.n_ctx = GGML_PAD(n_ctx, 256), per sequence too
SWA_PAD = 256


def pad(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


@dataclass(frozen=True, slots=True)
class ContextParams:
    """``llama_cparams`` as far as memory goes."""

    n_ctx: int  # total cells, padded
    n_ctx_seq: int  # cells per sequence (each stream's cache size)
    n_seq_max: int
    n_stream: int  # 1 with a unified KV cache, else n_seq_max
    n_batch: int
    n_ubatch: int
    n_outputs_max: int
    flash_attn: bool


def context_params(
    settings: RunSettings, n_ctx_train: int = 0, causal: bool = True
) -> ContextParams:
    """``n_ctx`` 0 means the model's training context, as in llama.cpp. A non-causal
    model's batch is not capped by the context."""
    n_seq = max(1, settings.n_seq_max)
    requested = settings.n_ctx or n_ctx_train
    if requested < 1:
        raise ValueError("n_ctx is 0 and the model does not say its training context")
    n_batch = min(requested, settings.n_batch) if causal else settings.n_batch
    n_ubatch = min(n_batch, settings.n_ubatch)
    n_ctx = pad(requested, CTX_PAD)
    if settings.kv_unified:
        n_ctx_seq = n_ctx
    else:
        n_ctx_seq = pad(n_ctx // n_seq, CTX_PAD)
        n_ctx = n_ctx_seq * n_seq
    return ContextParams(
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        n_seq_max=n_seq,
        n_stream=1 if settings.kv_unified else n_seq,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        n_outputs_max=min(settings.n_outputs_max, n_batch) if settings.n_outputs_max else n_batch,
        flash_attn=settings.flash_attn,
    )


def _rotation_sizes(shape: ModelShape, settings: RunSettings) -> tuple[int, int]:
    """The Hadamard rotations llama.cpp applies around a quantized K / V cache (none for
    MLA: ``build_attn_inp_k`` builds no rotation input)."""
    if shape.mla is not None:
        return 0, 0
    type_k, type_v = settings.type_k.ggml_type, settings.type_v.ggml_type
    k_rot = 0
    if type_k in QUANTIZED and shape.head_dim_k % 64 == 0:
        k_rot = 64
        while shape.head_dim_k % (k_rot * 2) == 0:
            k_rot *= 2
    v_rot = 64 if type_v in QUANTIZED and shape.head_dim_v % 64 == 0 else 0
    return k_rot, v_rot


def reserve_spec(shape: ModelShape, settings: RunSettings, cparams: ContextParams) -> GraphSpec:
    """The worst-case ubatch ``sched_reserve`` builds: n_ubatch tokens, all cells, all outputs."""
    n_tokens = min(cparams.n_ctx, cparams.n_ubatch)
    n_outputs = min(n_tokens, cparams.n_outputs_max)
    n_seqs = cparams.n_seq_max
    n_tokens = pad(n_tokens, n_seqs)  # graph_reserve rounds up to a multiple of n_seqs
    k_rot, v_rot = _rotation_sizes(shape, settings)
    return GraphSpec(
        n_tokens=n_tokens,
        n_outputs=n_outputs,
        n_stream=cparams.n_stream,
        n_kv=cparams.n_ctx_seq,
        flash_attn=cparams.flash_attn,
        type_k=settings.type_k.ggml_type,
        type_v=settings.type_v.ggml_type,
        k_rot=k_rot,
        v_rot=v_rot,
        n_kv_swa=swa_cells(shape, settings, cparams) if shape.exact and shape.n_swa else 0,
        n_seqs=n_seqs,  # ubatch_reserve(n_tokens / n_seqs, n_seqs): n_seq_max sequences
    )


def layer_cells(shape: ModelShape, settings: RunSettings, cparams: ContextParams, il: int) -> int:
    """Cells per stream of layer ``il``'s cache (SWA layers may have a smaller one)."""
    return swa_cells(shape, settings, cparams) if shape.layers[il].swa else cparams.n_ctx_seq


def swa_cells(shape: ModelShape, settings: RunSettings, cparams: ContextParams) -> int:
    """Cells per stream of the sliding-window cache (``llama_kv_cache_iswa``'s ``size_swa``)."""
    if settings.swa_full:
        return cparams.n_ctx_seq
    per_stream = shape.n_swa * (cparams.n_seq_max if settings.kv_unified else 1)
    return pad(min(cparams.n_ctx_seq, per_stream + cparams.n_ubatch), SWA_PAD)


def kv_tensor_bytes(
    shape: ModelShape, settings: RunSettings, cparams: ContextParams, il: int
) -> tuple[int, int]:
    """Bytes of layer ``il``'s K and V tensors: row_size(type, n_embd_gqa) * cells * streams
    (MLA: no V tensor, V is a view of K)."""
    layer = shape.layers[il]
    if layer.recurrent:  # the hybrid's attention cache skips it (its state: recurrent.py)
        return 0, 0
    cells = layer_cells(shape, settings, cparams, il) * cparams.n_stream
    n_embd_k = shape.head_dim_k * layer.n_head_kv
    n_embd_v = shape.head_dim_v * layer.n_head_kv
    if not settings.flash_attn:  # a transposed V cache is padded to the widest layer
        n_embd_v = shape.head_dim_v * shape.n_head_kv_max
    k = row_size(settings.type_k.ggml_type, n_embd_k) * cells
    v = row_size(settings.type_v.ggml_type, n_embd_v) * cells
    return k, 0 if shape.mla is not None else v


def output_buffer_bytes(shape: ModelShape, cparams: ContextParams) -> int:
    """``output_reserve(n_seq_max)`` at context creation: one row of logits per sequence.

    It grows at run time when a batch asks for more outputs (all logits of a prompt).
    """
    return shape.n_vocab * cparams.n_seq_max * 4


def token_generation_spec(prompt: GraphSpec, cparams: ContextParams) -> GraphSpec | None:
    """The one-token-per-sequence graph ``sched_reserve`` also reserves, when it can be
    the bigger one (an n_ubatch below n_seq_max: more outputs than the prompt graph)."""
    n_seqs = cparams.n_seq_max
    if n_seqs <= prompt.n_outputs and n_seqs <= prompt.n_tokens:
        return None
    return replace(prompt, n_tokens=n_seqs, n_outputs=n_seqs)
