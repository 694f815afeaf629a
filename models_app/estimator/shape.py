"""What the estimator needs from a model, derived once from its ``ModelFacts``.

``prepare(facts)`` reads the hyperparameters the way llama.cpp's loader does and
sorts every tensor into the layer llama.cpp assigns it to (input, a repeating
layer, or output), with the op it is used by (which decides its buffer type).
The result is cached per ``ModelFacts`` object, so repeated estimates skip it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from models_app.gguf import ModelFacts, TensorInfo
from models_app.gguf.values import MetaValue

# graphs mirrored from src/models/*.cpp
EXACT_ARCHITECTURES = frozenset(
    {
        "llama", "qwen2", "qwen3", "qwen3moe", "qwen2moe", "gemma2", "gemma3", "phi3",
        "deepseek2", "glm4moe", "gpt-oss", "bert", "nomic-bert", "lfm2", "granitehybrid",
    }
)  # fmt: skip
# hybrids whose layers without KV heads are recurrent (``hparams.is_recr``: lfm2's short
# convolutions, granite-hybrid's Mamba-2), with state memory and graph in recurrent.py
HYBRID_ARCHITECTURES = frozenset({"lfm2", "granitehybrid"})
# encoders whose graph encoder.py replays (src/models/bert.cpp): no output head, the
# graph ends in the last layer's hidden states (and the pooling)
ENCODER_ARCHITECTURES = frozenset({"bert", "nomic-bert"})
# one attn_qkv matrix (Q, K and V are views of its product)
FUSED_QKV_ARCHITECTURES = frozenset({"phi3", "nomic-bert"})
# their loaders read no sliding window (the key is ignored; phi3 reads it and turns it off)
NO_WINDOW_ARCHITECTURES = frozenset(
    {"llama", "qwen2", "qwen3", "qwen3moe", "qwen2moe", "phi3", "deepseek2", "glm4moe"}
)
# shared experts added to the routed ones: behind a sigmoid gate (qwen2moe) or as they are
SHARED_EXPERT_ARCHITECTURES = frozenset({"qwen2moe", "deepseek2", "glm4moe", "granitehybrid"})
# llm_expert_gating_func_type (expert_gating_func); 0, the key missing, is each loader's default
GATING_FUNCS = {1: "softmax", 2: "sigmoid"}
DEFAULT_GATING = {"deepseek2": "softmax", "glm4moe": "sigmoid"}
# load_swa_pattern's default per architecture when the file has no sliding_window_pattern,
# and the window gemma2 assumes without the key (llama_model_gemma2::load_arch_hparams)
SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gpt-oss": 2}
DEFAULT_WINDOWS = {"gemma2": 4096}
GEMMA_ARCHITECTURES = frozenset({"gemma2", "gemma3"})
# the compute buffer of an architecture without an exact graph: its llama-like replay
# times this (bound.py says why)
INEXACT_COMPUTE_FACTOR = 1.5
# llama_model::create_memory returns no memory (no KV cache) for these: non-causal
# encoders and diffusion models, whose attention runs over the batch alone
NO_CACHE_ARCHITECTURES = frozenset(
    {
        "bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2",
        "jina-bert-v3", "eurobert", "gemma-embedding", "wavtokenizer-dec", "dream", "llada",
        "llada-moe", "rnd1",
    }
)  # fmt: skip
INPUT_LAYER = -1  # llama.cpp's LLM_TENSOR_LAYER_INPUT (token embeddings): always on the CPU
_BLOCK = re.compile(r"blk\.(\d+)\.")
_CACHE_SIZE = 16


class EstimatorError(ValueError):
    """The facts lack something an estimate cannot do without."""


@dataclass(frozen=True, slots=True)
class Weight:
    """One weight tensor: ``layer`` is a block index, ``INPUT_LAYER`` or ``n_layer`` (output)."""

    name: str
    layer: int
    type: str
    ne: tuple[int, ...]
    nbytes: int
    offset: int
    shard: int
    op: str  # the op llama.cpp tests the buffer type with: GET_ROWS, MUL_MAT, MUL_MAT_ID, ADD, MUL


@dataclass(frozen=True, slots=True)
class LayerShape:
    """One repeating layer as the graph sees it."""

    n_head: int
    n_head_kv: int
    n_ff: int
    qkv_bias: bool  # qwen2: attn_q/k/v.bias
    out_bias: bool  # attn_output.bias
    moe: bool  # ffn_gate_inp + *_exps instead of ffn_gate/up/down
    swa: bool  # a sliding-window attention layer (own cache size when swa_full is off)
    qk_norm: bool = False  # qwen3: attn_q_norm/attn_k_norm, an RMS norm per head before RoPE
    fused_qkv: bool = False  # phi3: one attn_qkv matrix, Q, K and V views of its product
    n_ff_shexp: int = 0  # qwen2moe: the shared expert's width (0: none)
    recurrent: bool = False  # a hybrid's recurrent layer (short conv, Mamba-2): state, no KV


@dataclass(frozen=True, slots=True)
class GraphTraits:
    """How an architecture's graph differs from llama's (src/models/<arch>.cpp)."""

    embd_scale: bool = False  # gemma: the embeddings scaled by sqrt(n_embd)
    post_norms: bool = False  # gemma: post_attention_norm and post_ffw_norm around the blocks
    q_scale: bool = False  # gemma: Q scaled after RoPE (build_attn with kq_scale 1)
    attn_softcap: bool = False  # gemma2: tanh soft-capping of K·Q (hparams.attn_soft_cap)
    final_softcap: bool = False  # gemma2, gemma3 with the key: tanh soft-capping of the logits
    fused_up: bool = False  # phi3: ffn_up is gate and up in one (2 x n_ff wide), then SWIGLU
    residual_first: bool = False  # phi3: the block's last add is add(residual, ffn out)
    moe_norm_w: bool = True  # build_moe_ffn's norm_w (qwen2moe: the top-k weights as they are)
    # build_moe_ffn's gating_op: softmax, sigmoid (deepseek2) or softmax_weight (gpt-oss:
    # the softmax over the chosen experts' logits)
    moe_gating: str = "softmax"
    moe_w_scale: bool = False  # deepseek2: the expert weights scaled (expert_weights_scale)
    ffn_norm: str = "ffn_norm"  # the norm before the FFN (glm4moe: post_attention_norm)
    late_out_ids: bool = False  # gpt-oss: the output rows picked after the last layer
    rope: bool = True  # granite-hybrid without rope.scaling.finetuned: no RoPE (NoPE)
    residual_scale: bool = False  # granite: the blocks' outputs scaled before each residual add
    logit_scale: bool = False  # granite: the logits scaled (1 / logit_scale)


@dataclass(frozen=True, slots=True)
class Mla:
    """deepseek2's multi-head latent attention (``hparams.is_mla()``): one cached head of
    ``kv_lora_rank + n_rot`` (``head_dim_k``) per cell, V a view of its first
    ``kv_lora_rank`` values; queries absorbed into that space and back (``wk_b``, ``wv_b``)."""

    q_lora_rank: int  # 0: one attn_q (lite), else attn_q_a, its norm and attn_q_b
    kv_lora_rank: int
    n_rot: int  # RoPE dims of a head (rope.dimension_count)
    head_k: int  # a decompressed head: key_length_mla (no-RoPE part + n_rot)
    head_v: int  # value_length_mla


@dataclass(frozen=True, slots=True)
class RecurrentState:
    """A hybrid's recurrent layers (llama_hparams: ``n_embd_r``, ``n_embd_s``): lfm2's short
    convolutions keep the last ``d_conv`` (``shortconv.l_cache - 1``) inputs of each
    channel, no S state; granite-hybrid's Mamba-2 layers the last ``d_conv``
    (``ssm.conv_kernel - 1``) of x, B and C and an SSM state of ``d_state x d_inner``."""

    d_conv: int
    n_embd_r: int  # F32 values of a layer's R (conv) state per sequence
    n_embd_s: int  # ... of its S (SSM) state
    kind: str = "shortconv"  # or "mamba2"
    d_inner: int = 0  # mamba2: ssm.inner_size
    d_state: int = 0  # ssm.state_size
    n_group: int = 0  # ssm.group_count
    n_head: int = 0  # ssm.time_step_rank: SSM heads


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Hyperparameters and weights of a model, in llama.cpp's terms."""

    arch: str
    exact: bool
    notes: tuple[str, ...]  # why an estimate for this model is approximate
    n_layer: int
    n_embd: int
    n_vocab: int
    head_dim_k: int
    head_dim_v: int
    n_expert: int
    n_expert_used: int
    n_swa: int
    n_ctx_train: int  # context_length, 0 if the file does not say
    layers: tuple[LayerShape, ...]
    tied_embeddings: bool
    output_bias: bool
    weights: tuple[Weight, ...]
    weight_types: dict[str, str]  # tensor name -> ggml type
    uniform: bool  # all repeating layers alike (lets the compute graph be simulated in part)
    encoder: bool = False  # no KV cache: attention over the ubatch only (NO_CACHE_ARCHITECTURES)
    recurrent_bytes: int = 0  # a bound on one layer's recurrent state per sequence (inexact only)
    traits: GraphTraits = GraphTraits()
    mla: Mla | None = None  # deepseek2: the KV cache holds K only (V is a view of it)
    recurrent: RecurrentState | None = None  # an exact hybrid's state (recurrent.py)
    pooling_type: str = "none"  # {arch}.pooling_type: the pooling llama.cpp defaults to
    n_embd_out: int = 0  # hparams.n_embd_out(): an embedding's width (0: n_embd)
    # worked out from the above: the most KV heads of a layer, whether a layer uses SWA,
    # and per layer its weights' types (name after "blk.N.", type), sorted
    n_head_kv_max: int = field(init=False)
    has_swa: bool = field(init=False)
    layer_types: tuple[tuple[tuple[str, str], ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        n_head_kv_max = max((layer.n_head_kv for layer in self.layers), default=0)
        object.__setattr__(self, "n_head_kv_max", n_head_kv_max)
        object.__setattr__(self, "has_swa", any(layer.swa for layer in self.layers))
        object.__setattr__(self, "layer_types", _layer_types(self.weights, self.n_layer))


def _layer_types(
    weights: tuple[Weight, ...], n_layer: int
) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Per layer, its weights' names after ``blk.N.`` with their types (the last weight
    of a name wins, as in ``weight_types``), sorted."""
    prefixes = [f"blk.{il}." for il in range(n_layer)]
    per_layer: list[dict[str, str]] = [{} for _ in range(n_layer)]
    for weight in weights:
        layer = weight.layer
        if 0 <= layer < n_layer and weight.name.startswith(prefixes[layer]):
            per_layer[layer][weight.name[len(prefixes[layer]) :]] = weight.type
    return tuple(tuple(sorted(types.items())) for types in per_layer)


_CACHE: OrderedDict[int, tuple[ModelFacts, ModelShape]] = OrderedDict()


def prepare(facts: ModelFacts) -> ModelShape:
    """The ``ModelShape`` of ``facts`` (cached by object identity)."""
    hit = _CACHE.get(id(facts))
    if hit is not None and hit[0] is facts:
        _CACHE.move_to_end(id(facts))
        return hit[1]
    shape = build_shape(facts)
    _CACHE[id(facts)] = (facts, shape)
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return shape


def build_shape(facts: ModelFacts) -> ModelShape:
    notes: list[str] = []
    arch = facts.architecture
    if arch not in EXACT_ARCHITECTURES:
        notes.append(inexact_note(arch, _no_cache(facts)))
    n_layer = _n_layer(facts) - _n_nextn(facts)
    tensors = _loaded(facts.tensors, n_layer)
    by_name = {info.name: info for info in tensors}
    n_embd = facts.embedding_length or _dim(by_name, "token_embd.weight", 0)
    n_vocab = _n_vocab(facts, by_name)
    head_dim_k, head_dim_v = _head_dims(facts, n_embd)
    mla = _mla(facts, by_name, notes)
    recurrent = _recurrent(facts, n_embd, notes)
    notes.extend(_unmodelled(facts))
    layers = tuple(_layer(facts, by_name, il, n_embd, head_dim_k, notes) for il in range(n_layer))
    if notes:  # a bound: recurrent layers counted as attention layers
        layers = _attention_everywhere(layers)
    return ModelShape(
        arch=arch,
        exact=not notes,
        notes=tuple(dict.fromkeys(notes)),
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=n_vocab,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_expert=facts.expert_count or 0,
        n_expert_used=facts.expert_used_count or 0,
        n_swa=_n_swa(facts),
        n_ctx_train=facts.context_length or 0,
        layers=layers,
        tied_embeddings="output.weight" not in by_name and arch not in ENCODER_ARCHITECTURES,
        output_bias="output.bias" in by_name,
        weights=tuple(_weight(info, n_layer, arch) for info in tensors),
        weight_types={info.name: info.ggml_type for info in tensors},
        uniform=all(layer == layers[0] for layer in layers),
        encoder=_no_cache(facts),
        recurrent_bytes=_recurrent_bytes(facts) if notes else 0,
        traits=_traits(facts),
        mla=mla,
        recurrent=None if notes else recurrent,
        pooling_type=facts.pooling_type or "none",
        n_embd_out=_int_key(facts, "embedding_length_out") or n_embd,
    )


def _n_nextn(facts: ModelFacts) -> int:
    """deepseek2's and glm4moe's multi-token-prediction blocks: counted in block_count,
    after the decoder's; llama.cpp loads none of their tensors (``load_mtp`` off), makes
    no cache for them and leaves them out of the graph."""
    return _int_key(facts, "nextn_predict_layers") if facts.architecture in DEFAULT_GATING else 0


def _loaded(tensors: tuple[TensorInfo, ...], n_layer: int) -> tuple[TensorInfo, ...]:
    """The tensors llama.cpp loads: none of a block past the decoder's ``n_layer``."""
    return tuple(
        info
        for info in tensors
        if not ((match := _BLOCK.match(info.name)) and int(match.group(1)) >= n_layer)
    )


def _mla(facts: ModelFacts, by_name: dict[str, TensorInfo], notes: list[str]) -> Mla | None:
    """deepseek2's latent attention as llama_model_deepseek2 loads it, and the notes for
    the forms of it without an exact graph."""
    if facts.architecture != "deepseek2":
        return None
    head_k = _int_key(facts, "attention.key_length_mla")
    head_v = _int_key(facts, "attention.value_length_mla")
    if not (head_k and head_v and "blk.0.attn_k_b.weight" in by_name):
        notes.append("deepseek2 without split attn_k_b/attn_v_b (MLA) has no exact graph")
        return None
    q_a = by_name.get("blk.0.attn_q_a.weight")  # its rows: the Q LoRA's rank
    return Mla(
        q_lora_rank=q_a.shape[1] if q_a is not None and len(q_a.shape) >= 2 else 0,
        kv_lora_rank=_int_key(facts, "attention.kv_lora_rank"),
        n_rot=_int_key(facts, "rope.dimension_count") or head_k,
        head_k=head_k,
        head_v=head_v,
    )


def _recurrent(facts: ModelFacts, n_embd: int, notes: list[str]) -> RecurrentState | None:
    """A hybrid's recurrent state: lfm2's short convolutions (``llama_model_lfm2::
    load_arch_hparams``, ``llama_hparams::n_embd_r``) or granite-hybrid's Mamba-2, and notes
    for the files without an exact graph."""
    arch = facts.architecture
    if arch not in HYBRID_ARCHITECTURES:
        return None
    if _n_swa(facts):  # llama_memory_hybrid_iswa and the iSWA graph
        notes.append(f"{arch} with sliding-window attention layers has no exact graph")
    if _no_cache(facts):  # build_shortconv_block's centred window
        notes.append(f"non-causal {arch} has no exact graph")
    if arch == "granitehybrid":
        return _mamba2(facts, n_embd, notes)
    l_cache = _int_key(facts, "shortconv.l_cache")
    if l_cache < 2:
        raise EstimatorError(f"{arch} needs shortconv.l_cache of at least 2")
    return RecurrentState(d_conv=l_cache - 1, n_embd_r=n_embd * (l_cache - 1), n_embd_s=0)


def _mamba2(facts: ModelFacts, n_embd: int, notes: list[str]) -> RecurrentState:
    """granite-hybrid's Mamba-2 state (``llama_model_granite_hybrid::load_arch_hparams``)."""
    d_conv, d_inner = _int_key(facts, "ssm.conv_kernel"), _int_key(facts, "ssm.inner_size")
    d_state, n_group = _int_key(facts, "ssm.state_size"), _int_key(facts, "ssm.group_count")
    n_head = _int_key(facts, "ssm.time_step_rank")
    if not (d_conv > 1 and d_inner == 2 * n_embd and n_head and n_group):
        raise EstimatorError("granite-hybrid needs its ssm keys (d_inner = 2 x n_embd)")
    return RecurrentState(
        d_conv=d_conv - 1,
        n_embd_r=(d_conv - 1) * (d_inner + 2 * n_group * d_state),
        n_embd_s=d_state * d_inner,
        kind="mamba2",
        d_inner=d_inner,
        d_state=d_state,
        n_group=n_group,
        n_head=n_head,
    )


def _unmodelled(facts: ModelFacts) -> list[str]:
    """Notes for the parts of deepseek2 and glm4moe files that have no exact graph."""
    arch = facts.architecture
    if arch not in DEFAULT_GATING:
        return []
    notes = []
    unmodelled = {
        "expert_group_count": "grouped expert selection",
        "attention.temperature_scale": "attention temperature scaling",
        "rope.dimension_sections": "multi-section RoPE",
    }
    for key, what in unmodelled.items():
        value = facts.metadata.get(f"{arch}.{key}")
        limit = 1 if key == "expert_group_count" else 0
        if isinstance(value, list) or (isinstance(value, (int, float)) and value > limit):
            notes.append(f"{arch} with {what} has no exact graph")
    if _gating(facts) == "other":
        notes.append(f"{arch} with this expert gating function has no exact graph")
    return notes


def _traits(facts: ModelFacts) -> GraphTraits:
    arch = facts.architecture
    if arch == "phi3":
        return GraphTraits(q_scale=True, fused_up=True, residual_first=True)
    if arch == "qwen2moe":
        return GraphTraits(moe_norm_w=False)
    if arch == "granitehybrid":
        return GraphTraits(  # rope.scaling.finetuned switches RoPE (default on)
            rope=facts.metadata.get(f"{arch}.rope.scaling.finetuned") is not False,
            residual_scale=bool(facts.metadata.get(f"{arch}.residual_scale")),
            logit_scale=bool(facts.metadata.get(f"{arch}.logit_scale")),
            moe_w_scale=facts.metadata.get(f"{arch}.expert_weights_scale") not in (None, 0, 1),
        )
    if arch == "gpt-oss":
        return GraphTraits(
            moe_norm_w=False,
            moe_gating="softmax_weight",
            ffn_norm="post_attention_norm",
            late_out_ids=True,
        )
    if arch in DEFAULT_GATING:
        scale = facts.metadata.get(f"{arch}.expert_weights_scale")
        return GraphTraits(
            moe_norm_w=facts.metadata.get(f"{arch}.expert_weights_norm") is True,
            moe_gating=_gating(facts),
            moe_w_scale=isinstance(scale, (int, float)) and scale not in (0.0, 1.0),
            ffn_norm="post_attention_norm" if arch == "glm4moe" else "ffn_norm",
        )
    if arch not in GEMMA_ARCHITECTURES:
        return GraphTraits()
    final_cap = facts.metadata.get(f"{arch}.final_logit_softcapping")
    return GraphTraits(
        embd_scale=True,
        post_norms=True,
        q_scale=True,
        attn_softcap=arch == "gemma2",  # gemma2 caps always (its default cap is 30)
        final_softcap=arch == "gemma2" or bool(final_cap),
    )


def _gating(facts: ModelFacts) -> str:
    """build_moe_ffn's gating_op for deepseek2 and glm4moe ("other": not modelled)."""
    func = _int_key(facts, "expert_gating_func")
    return GATING_FUNCS.get(func, "other") if func else DEFAULT_GATING[facts.architecture]


def _int_key(facts: ModelFacts, key: str) -> int:
    value = facts.metadata.get(f"{facts.architecture}.{key}")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _recurrent_bytes(facts: ModelFacts) -> int:
    """F32 conv + SSM state of one layer and sequence (``llama_hparams::n_embd_r`` and
    ``n_embd_s``: Mamba, RWKV, LFM2's short convolutions), every applicable form summed."""
    n_embd = facts.embedding_length or 0
    d_conv, d_inner = _int_key(facts, "ssm.conv_kernel"), _int_key(facts, "ssm.inner_size")
    d_state, n_group = _int_key(facts, "ssm.state_size"), _int_key(facts, "ssm.group_count")
    wkv_head = _int_key(facts, "wkv.head_size")
    token_shift = _int_key(facts, "token_shift_count") or 2
    l_cache = _int_key(facts, "shortconv.l_cache")
    values = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state) + d_state * d_inner
    if wkv_head:
        values += token_shift * n_embd + n_embd * wkv_head
    if l_cache:
        values += n_embd * (l_cache - 1)
    return 4 * values


def inexact_note(arch: str, encoder: bool = False) -> str:
    """The caveat every estimate of an architecture without an exact graph carries."""
    kv = (
        "it has no KV cache (llama.cpp makes none for it)"
        if encoder
        else "the KV cache is counted at full size for every layer"
    )
    return (
        f"upper bound: {arch!r} has no exact graph; weights are exact, {kv} and the compute "
        f"buffer is a llama-like replay times {INEXACT_COMPUTE_FACTOR} (see docs/architecture.md)"
    )


def _no_cache(facts: ModelFacts) -> bool:
    causal = facts.metadata.get(f"{facts.architecture}.attention.causal")
    return facts.architecture in NO_CACHE_ARCHITECTURES or causal is False


def _attention_everywhere(layers: tuple[LayerShape, ...]) -> tuple[LayerShape, ...]:
    """Layers without attention heads (recurrent layers of hybrids) counted as attention
    layers with the most heads any layer has: a bound, not the layout."""
    n_head = max((layer.n_head for layer in layers), default=0)
    n_head_kv = max((layer.n_head_kv for layer in layers), default=0)
    return tuple(
        replace(
            layer,
            n_head=layer.n_head or n_head,
            n_head_kv=layer.n_head_kv or n_head_kv,
            recurrent=False,
        )
        for layer in layers
    )


def _n_layer(facts: ModelFacts) -> int:
    if facts.block_count:
        return facts.block_count
    if facts.bytes_per_layer:
        return len(facts.bytes_per_layer)
    raise EstimatorError("the model has no block_count and no blk.N tensors")


def _dim(by_name: dict[str, TensorInfo], name: str, axis: int) -> int:
    info = by_name.get(name)
    if info is None or len(info.shape) <= axis:
        raise EstimatorError(f"cannot tell the model's dimensions: no {name}")
    return info.shape[axis]


def _n_vocab(facts: ModelFacts, by_name: dict[str, TensorInfo]) -> int:
    for name in ("output.weight", "token_embd.weight"):
        info = by_name.get(name)
        if info is not None and len(info.shape) >= 2:
            return info.shape[1]
    if facts.vocab_size:
        return facts.vocab_size
    raise EstimatorError("cannot tell the vocabulary size")


def _first(value: int | tuple[int, ...] | None) -> int | None:
    return value[0] if isinstance(value, tuple) else value


def _per_layer(value: int | tuple[int, ...] | None, il: int, default: int) -> int:
    if isinstance(value, tuple):
        return value[il] if il < len(value) else default
    return default if value is None else value


def _head_dims(facts: ModelFacts, n_embd: int) -> tuple[int, int]:
    n_head = _first(facts.head_count) or max(n_embd // 128, 1)
    head_dim_k = facts.key_length or n_embd // n_head
    return head_dim_k, facts.value_length or head_dim_k


def _n_swa(facts: ModelFacts) -> int:
    if facts.architecture in NO_WINDOW_ARCHITECTURES:  # their loaders ignore the key
        return 0
    return facts.sliding_window or DEFAULT_WINDOWS.get(facts.architecture, 0)


def _swa_layer(facts: ModelFacts, il: int) -> bool:
    if not _n_swa(facts):
        return False
    pattern: MetaValue | None = facts.metadata.get(
        f"{facts.architecture}.attention.sliding_window_pattern"
    )
    if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
        return (il + 1) % pattern != 0
    if isinstance(pattern, list) and il < len(pattern):
        return bool(pattern[il])
    default = SWA_PATTERNS.get(facts.architecture, 0)
    return not default or (il + 1) % default != 0


def _layer(
    facts: ModelFacts,
    by_name: dict[str, TensorInfo],
    il: int,
    n_embd: int,
    head_dim: int,
    notes: list[str],
) -> LayerShape:
    prefix = f"blk.{il}."
    n_head = _per_layer(facts.head_count, il, max(n_embd // head_dim, 1))
    moe = prefix + "ffn_gate_inp.weight" in by_name
    # experts: their tensors' width (qwen3moe's feed_forward_length is a dense width it
    # never uses; its experts are expert_feed_forward_length wide)
    n_ff = _ffn_width(by_name, prefix, moe) if moe else 0
    n_ff = n_ff or _per_layer(facts.feed_forward_length, il, 0)
    if not n_ff:
        n_ff = _ffn_width(by_name, prefix, moe)
    fused_qkv = (
        prefix + "attn_qkv.weight" in by_name and facts.architecture in FUSED_QKV_ARCHITECTURES
    )
    mla = facts.architecture == "deepseek2"  # its attention tensors are read by _mla
    n_head_kv = _per_layer(facts.head_count_kv, il, n_head)
    recurrent = facts.architecture in HYBRID_ARCHITECTURES and not n_head_kv  # is_recr
    if prefix + "attn_q.weight" not in by_name and not (fused_qkv or mla or recurrent):
        notes.append("the attention tensors are not attn_q/attn_k/attn_v; shapes are inferred")
    return LayerShape(
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_ff=n_ff,
        qkv_bias=prefix + "attn_q.bias" in by_name,
        out_bias=prefix + "attn_output.bias" in by_name,
        moe=moe,
        swa=_swa_layer(facts, il),
        qk_norm=prefix + "attn_q_norm.weight" in by_name,
        fused_qkv=fused_qkv,
        n_ff_shexp=_shared_expert_width(facts, by_name, prefix),
        recurrent=recurrent,
    )


def _shared_expert_width(facts: ModelFacts, by_name: dict[str, TensorInfo], prefix: str) -> int:
    """qwen2moe's shared expert (behind ffn_gate_inp_shexp), deepseek2's (its shared
    experts as one FFN); other architectures' are built otherwise and are not modelled."""
    info = by_name.get(prefix + "ffn_up_shexp.weight")
    if facts.architecture not in SHARED_EXPERT_ARCHITECTURES or info is None or len(info.shape) < 2:
        return 0
    return info.shape[1]


def _ffn_width(by_name: dict[str, TensorInfo], prefix: str, moe: bool) -> int:
    name = prefix + ("ffn_up_exps.weight" if moe else "ffn_up.weight")
    info = by_name.get(name)
    return info.shape[1] if info is not None and len(info.shape) >= 2 else 0


def _weight(info: TensorInfo, n_layer: int, arch: str = "") -> Weight:
    name = info.name
    match = _BLOCK.match(name)
    if match:
        layer = int(match.group(1))
    elif name.startswith("token_embd_norm") and arch == "lfm2":
        layer = n_layer  # LLM_TENSOR_OUTPUT_NORM_LFM2: lfm2's output norm, by this name
    elif name.startswith("token_embd_norm"):
        layer = 0  # LLM_TENSOR_LAYER_REPEATING: bert's embedding norm is on the first layer
    elif name.startswith(("token_embd", "token_types", "position_embd")):
        layer = INPUT_LAYER
    elif name.startswith("rope_"):
        layer = 0  # a repeating-layer tensor that llama.cpp duplicates per layer
    else:
        layer = n_layer
    return Weight(
        name=name,
        layer=layer,
        type=info.ggml_type,
        ne=info.shape,
        nbytes=info.n_bytes,
        offset=info.offset,
        shard=info.shard,
        op=_weight_op(name, info.shape),
    )


def _weight_op(name: str, ne: tuple[int, ...]) -> str:
    if name.startswith(("token_embd.", "token_types.", "position_embd.")):
        return "GET_ROWS"
    if name.endswith(".bias"):
        return "ADD"
    if "_exps." in name:
        return "MUL_MAT_ID"
    if "norm" in name or len(ne) < 2:
        return "MUL"
    return "MUL_MAT"
