"""Self-attention with a KV cache, as src/llama-graph.cpp builds it (``build_attn``,
``build_attn_mha``) over the cache views of src/llama-kv-cache.cpp (``get_k``,
``get_v``, ``cpy_k``, ``cpy_v``). Same ops, same order, same shapes."""

from __future__ import annotations

from dataclasses import dataclass

from models_app.estimator import ggml
from models_app.estimator.ggml import Graph, Tensor


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """The ubatch and cache a graph is reserved for (``llama_context::graph_reserve``)."""

    n_tokens: int  # tokens in the ubatch (a multiple of n_stream)
    n_outputs: int  # rows of logits the graph produces
    n_stream: int  # KV streams: n_seq_max, or 1 with a unified cache
    n_kv: int  # cache cells per stream the graph attends to (the full cache when reserving)
    flash_attn: bool
    type_k: str
    type_v: str
    k_rot: int  # size of the Hadamard rotation for a quantized K cache, 0 = none
    v_rot: int
    # cells per stream of the sliding-window cache of an iSWA model (llama_kv_cache_iswa:
    # its layers attend to that cache, with inputs of their own); 0 = one cache
    n_kv_swa: int = 0
    # embeddings on: the pooling build_pooling appends ("": embeddings off) and the
    # sequences of the ubatch it pools (ubatch.n_seqs_unq: n_seq_max when reserving)
    pooling: str = ""
    n_seqs: int = 1


@dataclass(slots=True)
class AttnInputs:
    """``llm_graph_input_attn_kv``: the inputs every attention layer shares."""

    k_idxs: Tensor
    v_idxs: Tensor
    kq_mask: Tensor
    k_rot: Tensor | None
    v_rot: Tensor | None


def attn_inputs(spec: GraphSpec, n_embd_v_gqa_max: int) -> AttnInputs:
    """``build_attn_inp_kv``: indices into the cache, the mask, the rotation matrices."""
    tokens = spec.n_tokens
    v_rows = tokens if spec.flash_attn else tokens * n_embd_v_gqa_max  # v_trans: per element
    mask_type = "F16" if spec.flash_attn else "F32"
    mask_ne = (spec.n_kv, tokens // spec.n_stream, 1, spec.n_stream)
    return AttnInputs(
        k_idxs=ggml.new_input("I64", (tokens,), "attn_inp_k_idxs"),
        v_idxs=ggml.new_input("I64", (v_rows,), "attn_inp_v_idxs"),
        kq_mask=ggml.new_input(mask_type, mask_ne, "attn_inp_kq_mask"),
        k_rot=_rot_input(spec.k_rot, "attn_inp_k_rot"),
        v_rot=_rot_input(spec.v_rot, "attn_inp_v_rot"),
    )


def _rot_input(size: int, name: str) -> Tensor | None:
    return ggml.new_input("F32", (size, size), name) if size else None


def hadamard(cur: Tensor, rot: Tensor) -> Tensor:
    """``llama_mul_mat_hadamard``: rotate rows in blocks of the rotation's size."""
    n = rot.ne[0]
    n_elements = cur.ne[0] * cur.ne[1] * cur.ne[2] * cur.ne[3]
    contiguous = cur.nb == ggml.contiguous_strides(cur.type, cur.ne)
    res = (
        ggml.reshape(cur, n, n_elements // n) if contiguous else ggml.cont(cur, n, n_elements // n)
    )
    res = ggml.mul_mat(rot, res)
    return ggml.reshape(res, *cur.ne)


@dataclass(frozen=True, slots=True)
class AttnOptions:
    """Which ``build_attn`` overload and attention variant a layer uses."""

    iswa: bool = False  # llm_graph_input_attn_kv_iswa (two caches)
    softcap: bool = False  # hparams.attn_soft_cap (gemma2)
    sinks: Tensor | None = None  # gpt-oss: attention sinks, one more source of the softmax


@dataclass(slots=True)
class KvLayer:
    """One layer's K and V cache tensors ([n_embd_gqa, kv_size, n_stream])."""

    k: Tensor
    v: Tensor
    head_dim_k: int
    head_dim_v: int
    n_head_kv: int


def kv_layer(spec: GraphSpec, il: int, head_dim_k: int, head_dim_v: int, n_head_kv: int) -> KvLayer:
    k = ggml.external(spec.type_k, (head_dim_k * n_head_kv, spec.n_kv, spec.n_stream), f"k{il}")
    v = ggml.external(spec.type_v, (head_dim_v * n_head_kv, spec.n_kv, spec.n_stream), f"v{il}")
    return KvLayer(k, v, head_dim_k, head_dim_v, n_head_kv)


def _get_k(kv: KvLayer, spec: GraphSpec) -> Tensor:
    k, row = kv.k, ggml.row_size
    n_embd_gqa = k.ne[0]
    nb = (
        row(k.type, kv.head_dim_k),
        row(k.type, n_embd_gqa),
        row(k.type, n_embd_gqa * spec.n_kv),
    )
    return ggml.view(k, (kv.head_dim_k, kv.n_head_kv, spec.n_kv, spec.n_stream), nb)


def _get_v(kv: KvLayer, spec: GraphSpec) -> Tensor:
    v, row = kv.v, ggml.row_size
    n_embd_gqa, size = v.ne[0], spec.n_kv
    if spec.flash_attn:  # V stored row by row, like K
        nb = (row(v.type, kv.head_dim_v), row(v.type, n_embd_gqa), row(v.type, n_embd_gqa * size))
        return ggml.view(v, (kv.head_dim_v, kv.n_head_kv, spec.n_kv, spec.n_stream), nb)
    nb = (row(v.type, size * kv.head_dim_v), row(v.type, size), row(v.type, size * n_embd_gqa))
    return ggml.view(v, (spec.n_kv, kv.n_head_kv, kv.head_dim_v, spec.n_stream), nb)


def _merge_streams(cache: Tensor, spec: GraphSpec) -> Tensor:
    if spec.n_stream > 1:
        return ggml.reshape(cache, cache.ne[0], cache.ne[1] * spec.n_stream)
    return cache


def _cpy_k(kv: KvLayer, k_cur: Tensor, k_idxs: Tensor, spec: GraphSpec) -> Tensor:
    n_embd_gqa = k_cur.ne[0] * k_cur.ne[1]
    k_cur = ggml.view(k_cur, (n_embd_gqa, k_cur.ne[2]), (k_cur.nb[2],))
    return ggml.set_rows(_merge_streams(kv.k, spec), k_cur, k_idxs)


def _cpy_v(kv: KvLayer, v_cur: Tensor, v_idxs: Tensor, spec: GraphSpec) -> Tensor:
    n_embd_gqa, n_tokens = v_cur.ne[0] * v_cur.ne[1], v_cur.ne[2]
    if spec.flash_attn:
        v_cur = ggml.view(v_cur, (n_embd_gqa, n_tokens), (v_cur.nb[2],))
        return ggml.set_rows(_merge_streams(kv.v, spec), v_cur, v_idxs)
    if ggml.row_size(v_cur.type, n_embd_gqa) == v_cur.nb[2]:
        v_cur = ggml.reshape(v_cur, n_embd_gqa, n_tokens)
    else:
        v_cur = ggml.cont(v_cur, n_embd_gqa, n_tokens)
    v = kv.v
    v_view = ggml.reshape(v, 1, v.ne[0] * v.ne[1] * v.ne[2])
    v_cur = ggml.reshape(v_cur, 1, n_embd_gqa * n_tokens)
    return ggml.set_rows(v_view, v_cur, v_idxs)


def attn_mha(
    graph: Graph,
    qkv: tuple[Tensor, Tensor, Tensor],
    mask: Tensor,
    spec: GraphSpec,
    softcap: bool,
    v_mla: Tensor | None = None,
    sinks: Tensor | None = None,
) -> Tensor:
    """``build_attn_mha``: softmax(K·Q)·V, or one FLASH_ATTN_EXT node. ``softcap``:
    ``hparams.attn_soft_cap`` (K·Q scaled, tanh, scaled back; flash attention fuses it).
    ``v_mla``: MLA's ``wv_b``, decompressing each head's latent values."""
    q, k, v = qkv
    v_trans = v.nb[1] > v.nb[2]
    ns = k.ne[3]
    q = ggml.view(
        q, (q.ne[0], q.ne[1], q.ne[2] // ns, ns), (q.nb[1], q.nb[2], q.nb[2] * (q.ne[2] // ns))
    )
    q = ggml.permute(q, 0, 2, 1, 3)
    k = ggml.permute(k, 0, 2, 1, 3)
    v = ggml.permute(v, 0, 2, 1, 3)
    if spec.flash_attn:
        # no cache (an encoder): K and V are F32 activations, cast to F16 for the kernel
        k, v = (ggml.cast(x, "F16") if x.type == "F32" else x for x in (k, v))
        cur = ggml.with_src(ggml.flash_attn_ext(q, k, v, mask), sinks)
        if v_mla is not None:  # as a matrix product with the tokens in dim 1
            cur = ggml.mul_mat(v_mla, ggml.permute(cur, 0, 2, 1, 3))
            cur = ggml.cont(ggml.permute(cur, 0, 2, 1, 3))
        cur = ggml.reshape(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
    else:
        kq = ggml.mul_mat(k, q)
        if softcap:
            kq = ggml.scale(ggml.tanh(ggml.scale(kq)))
        kq = ggml.with_src(ggml.soft_max(kq, mask), sinks)
        if not v_trans:  # MLA's V (a view of K): transposed into a copy
            v = ggml.cont(ggml.transpose(v))
        kqv = ggml.mul_mat(v, kq)
        if v_mla is not None:
            kqv = ggml.mul_mat(v_mla, kqv)
        cur = ggml.permute(kqv, 0, 2, 1, 3)
        cur = ggml.cont(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
    graph.expand(cur)
    return cur


def build_attn(
    graph: Graph,
    inputs: AttnInputs,
    kv: KvLayer,
    qkv: tuple[Tensor, Tensor, Tensor],
    spec: GraphSpec,
    core_device: int | None = None,
    options: AttnOptions = AttnOptions(),
) -> Tensor:
    """``llm_graph_context::build_attn`` up to (not including) the output projection.

    ``core_device``: where KQ, softmax and KQV run when that is not the layer's device
    (``offload_kqv`` off pins them to the CPU).
    """
    q_cur, k_cur, v_cur = qkv
    if inputs.k_rot is not None:
        q_cur = hadamard(q_cur, inputs.k_rot)
        k_cur = hadamard(k_cur, inputs.k_rot)
    if inputs.v_rot is not None:
        v_cur = hadamard(v_cur, inputs.v_rot)
    # the iSWA overload expands Q, K, V; the plain one Q, V, K (kept together either way)
    for tensor in (q_cur, k_cur, v_cur) if options.iswa else (q_cur, v_cur, k_cur):
        graph.expand(tensor)
    graph.expand(_cpy_k(kv, k_cur, inputs.k_idxs, spec))
    graph.expand(_cpy_v(kv, v_cur, inputs.v_idxs, spec))
    k, v = _get_k(kv, spec), _get_v(kv, spec)
    mha = (graph, (q_cur, k, v), inputs.kq_mask, spec, options.softcap, None, options.sinks)
    if core_device is None:
        cur = attn_mha(*mha)
    else:
        with ggml.on_device(core_device):
            cur = attn_mha(*mha)
    if inputs.v_rot is not None:
        cur = hadamard(cur, inputs.v_rot)
    return cur


def build_attn_k(
    graph: Graph,
    inputs: AttnInputs,
    kv: KvLayer,
    qkv: tuple[Tensor, Tensor, Tensor],
    spec: GraphSpec,
    v_mla: Tensor,
    core_device: int | None = None,
) -> Tensor:
    """``build_attn`` with ``llm_graph_input_attn_k`` (MLA): only K is stored, V is a view
    of each cached row's first ``v_cur.ne[0]`` values; no rotations."""
    q_cur, k_cur, v_cur = qkv
    for tensor in (q_cur, v_cur, k_cur):
        graph.expand(tensor)
    graph.expand(_cpy_k(kv, k_cur, inputs.k_idxs, spec))
    k = _get_k(kv, spec)
    v = ggml.view(k, (v_cur.ne[0], *k.ne[1:]), k.nb[1:])
    if core_device is None:
        return attn_mha(graph, (q_cur, k, v), inputs.kq_mask, spec, False, v_mla)
    with ggml.on_device(core_device):
        return attn_mha(graph, (q_cur, k, v), inputs.kq_mask, spec, False, v_mla)
