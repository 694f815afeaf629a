"""Hybrid models with recurrent state (lfm2, granite-hybrid), as llama.cpp 0.3.36 keeps
and runs them.

- **State memory**: ``llama_memory_hybrid`` (src/llama-memory-hybrid.cpp) holds an
  attention KV cache for the layers with KV heads (context.py sizes it; the recurrent
  layers have none) and a ``llama_memory_recurrent`` (src/llama-memory-recurrent.cpp)
  for the others: per recurrent layer an R tensor ``[n_embd_r, rows]`` and an S tensor
  ``[n_embd_s, rows]``, both F32 (``llama_model::create_memory``), ``rows = mem_size x
  (1 + n_rs_seq)`` with ``mem_size = max(1, n_seq_max)`` whatever ``kv_unified`` says.
  ``n_rs_seq`` (rollback snapshots for speculative decoding with a draft model) is 0 in
  llama-cpp-python and in llama-server without a draft. The tensors live where the
  layer's KV cache would (``offload_kqv``: the layer's device, else the CPU), one
  buffer per device, each tensor padded to the buffer's alignment; llama.cpp logs it
  as ``RS buffer size``.
- **Graph**: ``build_rs`` (src/llama-graph.cpp) reads the states of the ubatch's
  sequences; lfm2's ``build_shortconv_block`` (src/models/lfm2.cpp) runs the short
  convolution over them and writes the newest ``d_conv`` inputs back; granite-hybrid's
  ``build_mamba2_layer`` (src/models/mamba-base.cpp, src/models/granite-hybrid.cpp) does
  the same for x, B and C, then reads the SSM states through ``ggml_ssm_scan`` and writes
  the new ones from the end of its output. When reserving,
  the memory context is the full one (``llama_memory_recurrent_context`` with
  ``is_full``: ``n_rs = size``, head 0, ``rs_z`` 0) and the ubatch holds ``n_seq_max``
  sequences of ``n_tokens / n_seq_max`` tokens (``ubatch_reserve``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from models_app.estimator import ggml
from models_app.estimator.attention import GraphSpec
from models_app.estimator.context import pad
from models_app.estimator.ggml import Graph, Tensor
from models_app.estimator.layer_split import CPU, LayerSplit
from models_app.estimator.settings import RunSettings
from models_app.estimator.shape import LayerShape, ModelShape, RecurrentState
from models_app.estimator.weights import CPU_ALIGNMENT, CUDA_ALIGNMENT

if TYPE_CHECKING:
    from models_app.estimator.forward import DevicePlan

STATE_TYPE = "F32"  # recurrent_type_r / recurrent_type_s in llama_model::create_memory
N_RS_SEQ = 0  # cparams.n_rs_seq: no rollback snapshots without a draft model


def state_rows(n_seq_max: int) -> int:
    """Rows of each R / S tensor: ``mem_size * (1 + n_rs_seq)``, mem_size one per sequence."""
    return max(1, n_seq_max) * (1 + N_RS_SEQ)


def layer_state_bytes(state: RecurrentState, n_seq_max: int, alignment: int) -> int:
    """One recurrent layer's R and S tensors, each padded as its buffer allocates it."""
    rows = state_rows(n_seq_max)
    r = ggml.row_size(STATE_TYPE, state.n_embd_r) * rows
    s = ggml.row_size(STATE_TYPE, state.n_embd_s) * rows
    return pad(r, alignment) + pad(s, alignment)


def state_bytes(shape: ModelShape, settings: RunSettings, placement: LayerSplit) -> dict[int, int]:
    """The RS buffer per device (placement indices, ``CPU``): every recurrent layer's
    state where its cache lives."""
    if shape.recurrent is None:
        return {}
    devices = placement.layers if settings.offload_kqv else (CPU,) * shape.n_layer
    totals: dict[int, int] = {}
    for layer, device in zip(shape.layers, devices, strict=True):
        if layer.recurrent:
            alignment = CPU_ALIGNMENT if device == CPU else CUDA_ALIGNMENT
            size = layer_state_bytes(shape.recurrent, settings.n_seq_max, alignment)
            totals[device] = totals.get(device, 0) + size
    return totals


def describe_state(shape: ModelShape, n_seq_max: int, n_layers: int) -> str:
    """The working of ``n_layers`` recurrent layers' state ("" for none)."""
    if shape.recurrent is None or not n_layers:
        return ""
    rows, state = state_rows(n_seq_max), shape.recurrent
    if state.kind == "mamba2":
        sizes = (
            f"R {STATE_TYPE} [n_embd_r {state.n_embd_r} = (d_conv - 1) x (d_inner + 2 x "
            f"n_group x d_state)] + S {STATE_TYPE} [n_embd_s {state.n_embd_s} = d_state x d_inner]"
        )
    else:
        sizes = f"R {STATE_TYPE} [n_embd_r {state.n_embd_r} = n_embd x (l_cache - 1)]"
    return (
        f"recurrent state of {n_layers} layer(s) (RS buffer): {sizes}, {rows} row(s) each "
        "(one per sequence, kv_unified or not)"
    )


@dataclass(slots=True)
class RsInputs:
    """``llm_graph_input_rs``: which state row each sequence reads (``s_copy``), split
    into the ubatch's sequences and the rest."""

    main: Tensor
    extra: Tensor
    n_rs: int


def rs_inputs(spec: GraphSpec) -> RsInputs:
    """``build_rs_inp_impl`` for the reserved graph: ``n_rs`` is the memory's size, one
    row per sequence, so all of them belong to the ubatch."""
    n_rs, n_seqs = max(1, spec.n_seqs), spec.n_seqs  # get_n_rs(): the memory's mem_size
    s_copy = ggml.new_input("I32", (n_rs,), "rs_s_copy")
    main = ggml.view(s_copy, (n_seqs,))
    extra = ggml.view(s_copy, (n_rs - n_seqs,))
    return RsInputs(main, extra, n_rs)


class HybridBuilder(Protocol):
    """What the hybrid graph uses of forward.py's graph builder."""

    graph: Graph
    shape: ModelShape
    spec: GraphSpec
    plan: DevicePlan
    out_ids: Tensor
    rs: RsInputs | None

    def w(self, name: str, *ne: int) -> Tensor: ...

    def norm(self, cur: Tensor, name: str) -> Tensor: ...

    def attention(self, cur: Tensor, il: int) -> Tensor: ...

    def ffn(self, cur: Tensor, il: int, n_ff: int, kind: str = "") -> Tensor: ...

    def moe(self, cur: Tensor, il: int, layer: LayerShape) -> Tensor: ...

    def shared_expert(self, cur: Tensor, il: int, moe_out: Tensor) -> Tensor: ...


def build_rs(graph: Graph, rs: RsInputs, s: Tensor, state_size: int, n_seqs: int) -> Tensor:
    """``llm_graph_context::build_rs``: clear the zeroed state (row ``rs_z``), gather the
    sequences' states, copy the others' into place; returns ``[state_size, n_seqs]``."""
    states = ggml.reshape(s, state_size, s.ne[1])
    graph.expand(ggml.scale_inplace(ggml.view(states, (state_size,))))  # rs_z is 0
    output_states = ggml.get_rows(states, rs.main)
    graph.expand(output_states)
    states_extra = ggml.get_rows(states, rs.extra)
    rest = ggml.view(s, (state_size, rs.n_rs - n_seqs), (s.nb[1],))
    graph.expand(ggml.cpy(states_extra, rest))
    return output_states


def shortconv_block(b: HybridBuilder, cur: Tensor, il: int) -> Tensor:
    """lfm2's ``build_shortconv_block`` (causal, ``n_rs_seq`` 0: one state written)."""
    shape, spec, state = b.shape, b.spec, b.shape.recurrent
    assert state is not None and b.rs is not None
    n_embd, n_seqs = shape.n_embd, spec.n_seqs
    n_seq_tokens = spec.n_tokens // n_seqs
    cur = ggml.reshape(cur, n_embd, n_seq_tokens, n_seqs)
    bcx = ggml.mul_mat(b.w(f"blk.{il}.shortconv.in_proj.weight", n_embd, 3 * n_embd), cur)
    b_, c, x = (ggml.view(bcx, (n_embd, n_seq_tokens, n_seqs), bcx.nb[1:3]) for _ in range(3))
    bx = ggml.transpose(ggml.mul(b_, x))
    with ggml.on_device(b.plan.compute[il], b.plan.kv[il]):  # where the layer's cache lives
        conv_state = ggml.external(STATE_TYPE, (state.n_embd_r, state_rows(n_seqs)), f"r{il}")
    conv_rs = build_rs(b.graph, b.rs, conv_state, state.n_embd_r, n_seqs)
    conv = ggml.reshape(conv_rs, state.d_conv, n_embd, n_seqs)
    bx = ggml.concat(conv, bx, 0)
    snapshot = ggml.view(bx, (state.d_conv, bx.ne[1], bx.ne[2]), bx.nb[1:3])
    destination = ggml.view(conv_state, (state.n_embd_r, n_seqs), (conv_state.nb[1],))
    b.graph.expand(ggml.cpy(snapshot, destination))
    kernel = b.w(f"blk.{il}.shortconv.conv.weight", state.d_conv + 1, n_embd)
    y = ggml.mul(c, ggml.ssm_conv(bx, kernel))
    y = ggml.mul_mat(b.w(f"blk.{il}.shortconv.out_proj.weight", n_embd, n_embd), y)
    return ggml.reshape(y, n_embd, n_seq_tokens * n_seqs)


def _ssm_states(b: HybridBuilder, s: Tensor, ssm_in: tuple[Tensor, ...], n_seqs: int) -> Tensor:
    """``build_rs`` over the S states with ``get_ssm_rows`` (``ggml_ssm_scan`` of ``ssm_in``:
    x, dt, A, B, C) in place of ``ggml_get_rows``; the new states written back."""
    state, rs = b.shape.recurrent, b.rs
    assert state is not None and rs is not None
    states = ggml.reshape(s, state.n_embd_s, s.ne[1])
    b.graph.expand(ggml.scale_inplace(ggml.view(states, (state.n_embd_s,))))
    head_dim = state.d_inner // state.n_head
    ssm = ggml.reshape(states, state.d_state, head_dim, state.n_head, states.ne[1])
    x, dt, a, b_, c = ssm_in
    y_ssm = ggml.ssm_scan(ssm, x, dt, a, b_, c, rs.main)
    b.graph.expand(y_ssm)
    rest = ggml.view(s, (state.n_embd_s, rs.n_rs - n_seqs), (s.nb[1],))
    b.graph.expand(ggml.cpy(ggml.get_rows(states, rs.extra), rest))
    row = ggml.row_size(STATE_TYPE, state.n_embd_s)
    new_states = ggml.view(y_ssm, (state.n_embd_s, n_seqs, 1), (row, row * n_seqs))
    b.graph.expand(ggml.cpy(new_states, ggml.view(s, (state.n_embd_s, n_seqs, 1), s.nb[1:3])))
    return y_ssm


def mamba2_block(b: HybridBuilder, cur: Tensor, il: int) -> Tensor:
    """``llm_build_mamba_base::build_mamba2_layer`` (src/models/mamba-base.cpp, K = 1):
    the convolution over x, B and C with its state, the selective scan with the SSM
    state, the gate z, D, the grouped RMS norm and the output projection."""
    spec, state, plan = b.spec, b.shape.recurrent, b.plan
    assert state is not None and b.rs is not None
    n_seqs, n_head, f32 = spec.n_seqs, state.n_head, ggml.row_size("F32", 1)
    n_seq_tokens, head_dim = spec.n_tokens // n_seqs, state.d_inner // n_head
    xbc_width = state.d_inner + 2 * state.n_group * state.d_state
    with ggml.on_device(plan.compute[il], plan.kv[il]):  # where the layer's cache lives
        rows = state_rows(n_seqs)
        conv_states = ggml.external(STATE_TYPE, (state.n_embd_r, rows), f"r{il}")
        ssm_states = ggml.external(STATE_TYPE, (state.n_embd_s, rows), f"s{il}")
    conv = build_rs(b.graph, b.rs, conv_states, state.n_embd_r, n_seqs)
    d_in_proj = xbc_width + state.d_inner + n_head
    zxbcdt = ggml.mul_mat(b.w(f"blk.{il}.ssm_in.weight", b.shape.n_embd, d_in_proj), cur)
    zxbcdt = ggml.reshape(zxbcdt, d_in_proj, n_seq_tokens, n_seqs)
    nb = zxbcdt.nb[1:3]
    z = ggml.view(zxbcdt, (head_dim, n_head, n_seq_tokens, n_seqs), (head_dim * f32, *nb))
    xbc = ggml.view(zxbcdt, (xbc_width, n_seq_tokens, n_seqs), nb)
    dt = ggml.view(zxbcdt, (n_head, n_seq_tokens, n_seqs), nb)
    conv = ggml.reshape(conv, state.d_conv, xbc_width, n_seqs)
    xbc = _mamba2_conv(b, il, conv_states, conv, xbc)
    nb = xbc.nb[1:3]
    x = ggml.view(xbc, (head_dim, n_head, n_seq_tokens, n_seqs), (head_dim * f32, *nb))
    bc_ne = (state.d_state, state.n_group, n_seq_tokens, n_seqs)
    b_, c = (ggml.view(xbc, bc_ne, (state.d_state * f32, *nb)) for _ in range(2))
    dt = ggml.add(ggml.cont(dt), b.w(f"blk.{il}.ssm_dt.bias", n_head))
    a = b.w(f"blk.{il}.ssm_a", 1, n_head)
    y_ssm = _ssm_states(b, ssm_states, (x, dt, a, b_, c), n_seqs)
    return _mamba2_output(b, il, x, z, y_ssm)


def _mamba2_conv(
    b: HybridBuilder, il: int, conv_states: Tensor, conv: Tensor, xbc: Tensor
) -> Tensor:
    """build_mamba2_layer's convolution: the state before the ubatch's x, B and C, the
    newest ``d_conv`` columns written back, ``ggml_ssm_conv``, its bias and SiLU."""
    state = b.shape.recurrent
    assert state is not None
    conv_x = ggml.concat(conv, ggml.transpose(xbc), 0)
    last = ggml.view(conv_x, (state.d_conv, *conv_x.ne[1:3]), conv_x.nb[1:3])
    n_seqs = conv_x.ne[2]
    destination = ggml.view(conv_states, (state.n_embd_r, n_seqs), (conv_states.nb[1],))
    b.graph.expand(ggml.cpy(last, destination))
    kernel = b.w(f"blk.{il}.ssm_conv1d.weight", state.d_conv + 1, conv_x.ne[1])
    xbc = ggml.ssm_conv(conv_x, kernel)
    return ggml.silu(ggml.add(xbc, b.w(f"blk.{il}.ssm_conv1d.bias", conv_x.ne[1])))


def _mamba2_output(b: HybridBuilder, il: int, x: Tensor, z: Tensor, y_ssm: Tensor) -> Tensor:
    """build_mamba2_layer after the scan: y (the scan's first values) plus D x, gated by
    z (SwiGLU), the RMS norm per group, the output projection."""
    state = b.shape.recurrent
    assert state is not None
    _head_dim, n_head, n_seq_tokens, n_seqs = x.ne
    step = x.nb[1]
    y = ggml.view(y_ssm, x.ne, (step, n_head * step, n_seq_tokens * n_head * step))
    y = ggml.add(y, ggml.mul(x, b.w(f"blk.{il}.ssm_d", 1, n_head)))
    y = ggml.glu_split(ggml.cont(z), y)
    y = ggml.reshape(y, state.d_inner // state.n_group, state.n_group, n_seq_tokens, n_seqs)
    y = b.norm(y, f"blk.{il}.ssm_norm.weight")
    y = ggml.reshape(y, state.d_inner, n_seq_tokens * n_seqs)
    return ggml.mul_mat(b.w(f"blk.{il}.ssm_out.weight", state.d_inner, b.shape.n_embd), y)


def granite_layer(b: HybridBuilder, inp: Tensor, il: int) -> Tensor:
    """One block of src/models/granite-hybrid.cpp: Mamba-2 or attention, then
    ``build_layer_ffn`` (dense, or experts softmax-gated with normalised weights plus an
    ungated shared expert) with granite's residual scaling."""
    layer, scaled = b.shape.layers[il], b.shape.traits.residual_scale
    cur = b.norm(inp, f"blk.{il}.attn_norm.weight")
    cur = mamba2_block(b, cur, il) if layer.recurrent else b.attention(cur, il)
    residual = inp
    if il == b.shape.n_layer - 1:
        cur = ggml.get_rows(cur, b.out_ids)
        residual = ggml.get_rows(residual, b.out_ids)
    ffn_inp = ggml.add(ggml.scale(cur) if scaled else cur, residual)
    normed = b.norm(ffn_inp, f"blk.{il}.ffn_norm.weight")
    if layer.moe:
        cur = b.moe(normed, il, layer)
        cur = b.shared_expert(normed, il, cur) if layer.n_ff_shexp else cur
    else:
        cur = b.ffn(normed, il, layer.n_ff)
    return ggml.add(ggml.scale(cur) if scaled else cur, ffn_inp)


def hybrid_layer(b: HybridBuilder, inp: Tensor, il: int) -> Tensor:
    """A block of the hybrid's architecture."""
    assert b.shape.recurrent is not None
    if b.shape.recurrent.kind == "mamba2":
        return granite_layer(b, inp, il)
    return lfm2_layer(b, inp, il)


def lfm2_layer(b: HybridBuilder, inp: Tensor, il: int) -> Tensor:
    """One block of src/models/lfm2.cpp: the operator (short conv or attention) and the
    dense FFN, each behind an RMS norm, with the residual added first."""
    layer = b.shape.layers[il]
    cur = b.norm(inp, f"blk.{il}.attn_norm.weight")
    cur = shortconv_block(b, cur, il) if layer.recurrent else b.attention(cur, il)
    residual = inp
    if il == b.shape.n_layer - 1:
        cur = ggml.get_rows(cur, b.out_ids)
        residual = ggml.get_rows(residual, b.out_ids)
    cur = ggml.add(residual, cur)
    ffn_out = b.ffn(b.norm(cur, f"blk.{il}.ffn_norm.weight"), il, layer.n_ff)
    return ggml.add(cur, ffn_out)
