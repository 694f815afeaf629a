"""Encoders and the pooling of embeddings, as llama.cpp 0.3.36 builds them.

- ``build_encoder_graph``: src/models/bert.cpp (``llama_model_bert::graph``): token,
  token-type and position embeddings, a LayerNorm, then blocks of non-causal attention
  over the ubatch alone (``build_attn_inp_no_cache``: no KV cache, a mask of
  ``n_tokens x n_tokens``; K and V are the F32 projections, cast to F16 for flash
  attention), post-norms with biases and a GELU FFN. The graph ends in the last
  layer's hidden states (``res->t_embd``); an encoder has no output head.
- ``build_pooling``: ``llm_graph_context::build_pooling`` (src/llama-graph.cpp), which
  ``llama_model::build_graph`` appends to every graph when embeddings are on: mean
  (a matrix product with ``inp_mean``), cls / last (the rows ``inp_cls`` picks) or rank
  (those rows through the classifier head: ``cls`` + tanh, ``cls.output``; qwen3's
  two outputs through a softmax).
- ``pooling_spec`` and ``embd_output_bytes``: the context's pooling type and the
  embeddings part of the output buffer (``llama_context::output_reserve``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from models_app.estimator import ggml
from models_app.estimator.attention import GraphSpec, attn_mha
from models_app.estimator.ggml import (
    FLAG_OUTPUT,
    FLAG_WEIGHTS,
    QUANTIZED,
    TYPE_TRAITS,
    Graph,
    Tensor,
)
from models_app.estimator.settings import RunSettings
from models_app.estimator.shape import ModelShape

if TYPE_CHECKING:
    from models_app.estimator.context import ContextParams
    from models_app.estimator.forward import DevicePlan

# encoders with rotary positions instead of position_embd (bert.cpp's RoPE branch)
ROPE_ENCODERS = frozenset({"nomic-bert", "nomic-bert-moe", "jina-bert-v3"})
# build_pooling's softmax over a reranker's outputs (Qwen3-Reranker's yes / no)
SOFTMAX_RANK_ARCHITECTURES = frozenset({"qwen3", "qwen3vl"})


def pooling_type(shape: ModelShape, settings: RunSettings) -> str:
    """``cparams.pooling_type``: "" with embeddings off (``build_pooling`` adds nothing),
    else the setting, else the model's own type (none when the file has no key)."""
    if not settings.embeddings:
        return ""
    return settings.pooling or shape.pooling_type or "none"


def pooling_spec(
    spec: GraphSpec, shape: ModelShape, settings: RunSettings, n_seq_max: int
) -> GraphSpec:
    """``spec`` with the pooling of the context; a reserved ubatch holds ``n_seq_max``
    sequences (``llama_batch_allocr::ubatch_reserve``: ``n_seqs_unq``)."""
    return replace(spec, pooling=pooling_type(shape, settings), n_seqs=n_seq_max)


def pooling_caveats(spec: GraphSpec) -> tuple[str, ...]:
    """Mean pooling of a reserved ubatch whose tokens were padded to a multiple of the
    sequences (or cut to ``n_outputs_max``): llama.cpp 0.3.36 aborts while reserving
    (``ggml_can_mul_mat``: the outputs are not padded as the tokens are)."""
    if spec.pooling != "mean" or spec.n_outputs == spec.n_tokens:
        return ()
    return (
        f"llama.cpp aborts at start-up with mean pooling over {spec.n_outputs} outputs of a "
        f"{spec.n_tokens}-token ubatch: make n_ubatch a multiple of the {spec.n_seqs} "
        "sequences (and n_outputs_max at least n_ubatch)",
    )


def embd_output_bytes(shape: ModelShape, settings: RunSettings, cparams: ContextParams) -> int:
    """The embeddings in the output buffer: ``output_reserve(n_seq_max)`` at context
    creation sizes ``n_embd_out`` floats per sequence (next to the logits, which every
    context has, an encoder's too). It grows at run time with a batch's outputs."""
    if not settings.embeddings:
        return 0
    return (shape.n_embd_out or shape.n_embd) * cparams.n_seq_max * 4


def weight(shape: ModelShape, name: str, *ne: int) -> Tensor:
    """A weight of the model (its file type if it fits the shape, else F32), as
    ``forward._Builder.w``."""
    type_name = shape.weight_types.get(name, "F32")
    if type_name in QUANTIZED and ne[0] % TYPE_TRAITS[type_name][0]:
        type_name = "F32"
    return ggml.external(type_name, ne, name, FLAG_WEIGHTS)


def _weight_ne(shape: ModelShape, name: str) -> tuple[int, ...]:
    return next(item.ne for item in shape.weights if item.name == name)


def build_pooling(graph: Graph, shape: ModelShape, spec: GraphSpec, inp: Tensor) -> Tensor | None:
    """``llm_graph_context::build_pooling`` over ``inp`` (``res->t_embd``); the pooled
    result is an output of the graph (``set_outputs``)."""
    if not spec.pooling:
        return None
    cur = inp
    if spec.pooling == "mean":
        inp_mean = ggml.new_input("F32", (spec.n_tokens, spec.n_seqs), "mean")
        cur = ggml.mul_mat(ggml.cont(ggml.transpose(inp)), inp_mean)
    elif spec.pooling in ("cls", "last", "rank"):
        cur = ggml.get_rows(inp, ggml.new_input("I32", (spec.n_seqs,), "cls"))
    if spec.pooling == "rank":
        cur = _classifier(shape, cur)
    graph.expand(cur)
    cur.flags |= FLAG_OUTPUT
    return cur


def _classifier(shape: ModelShape, cur: Tensor) -> Tensor:
    """build_pooling's RANK head: ``cls`` (+ bias, tanh), ``cls.output`` (+ bias),
    qwen3's softmax; each part only if the model has it."""
    types = shape.weight_types
    if "cls.weight" in types:
        cur = ggml.mul_mat(weight(shape, "cls.weight", *_weight_ne(shape, "cls.weight")), cur)
        if "cls.bias" in types:
            cur = ggml.add(cur, weight(shape, "cls.bias", cur.ne[0]))
        cur = ggml.tanh(cur)  # modern-bert: a GELU, same shapes
    if "cls.output.weight" in types:
        ne = _weight_ne(shape, "cls.output.weight")
        cur = ggml.mul_mat(weight(shape, "cls.output.weight", *ne), cur)
        if "cls.output.bias" in types:
            cur = ggml.add(cur, weight(shape, "cls.output.bias", cur.ne[0]))
    if shape.arch in SOFTMAX_RANK_ARCHITECTURES:
        cur = ggml.soft_max(cur)
    return cur


def _layer_norm(a: Tensor) -> Tensor:
    """``ggml_norm`` (mean and variance; not done in place by ggml-alloc)."""
    return ggml.Tensor(a.type, a.ne, "NORM", (a,))


class _Encoder:
    """One bert graph under construction (src/models/bert.cpp)."""

    def __init__(self, shape: ModelShape, spec: GraphSpec, plan: DevicePlan) -> None:
        self.graph, self.shape, self.spec, self.plan = Graph(), shape, spec, plan
        n_tokens = spec.n_tokens
        with ggml.on_device(plan.input):
            self.pos = ggml.new_input("I32", (n_tokens,), "inp_pos")
            embd = self._inp_embd()
        with ggml.on_device(plan.compute[0], plan.weights[0]):
            self.embd = self.norm(embd, "token_embd_norm")
        with ggml.on_device(plan.input):
            # build_attn_inp_no_cache: one mask over the ubatch (F16 for flash attention)
            mask_type = "F16" if spec.flash_attn else "F32"
            self.kq_mask = ggml.new_input(mask_type, (n_tokens, n_tokens, 1, 1), "self_kq_mask")
            self.out_ids = ggml.new_input("I32", (spec.n_outputs,), "out_ids")

    def w(self, name: str, *ne: int) -> Tensor:
        return weight(self.shape, name, *ne)

    def has(self, name: str) -> bool:
        return name in self.shape.weight_types

    def _inp_embd(self) -> Tensor:
        """``build_inp_embd`` plus sentence A's token-type row and the learned positions."""
        n_embd, n_tokens = self.shape.n_embd, self.spec.n_tokens
        tokens = ggml.new_input("I32", (n_tokens,), "inp_tokens")
        embd = ggml.new_input("F32", (n_embd, n_tokens), "inp_embd")
        cur = ggml.get_rows(self.w("token_embd.weight", n_embd, self.shape.n_vocab), tokens)
        self.graph.expand(cur)  # ggml_build_forward_select visits both inputs
        self.graph.expand(embd)
        if self.has("token_types.weight"):
            types = self.w("token_types.weight", *_weight_ne(self.shape, "token_types.weight"))
            cur = ggml.add(cur, ggml.view(types, (n_embd,)))
        if self.has("position_embd.weight"):  # bert: absolute positions
            ne = _weight_ne(self.shape, "position_embd.weight")
            cur = ggml.add(ggml.get_rows(self.w("position_embd.weight", *ne), self.pos), cur)
        return cur

    def norm(self, cur: Tensor, name: str) -> Tensor:
        """``build_norm`` with LLM_NORM, a weight and a bias."""
        cur = ggml.mul(_layer_norm(cur), self.w(f"{name}.weight", cur.ne[0]))
        if self.has(f"{name}.bias"):
            cur = ggml.add(cur, self.w(f"{name}.bias", cur.ne[0]))
        return cur

    def linear(self, cur: Tensor, name: str, n_out: int) -> Tensor:
        """``build_lora_mm`` with the bias added if the model has one."""
        cur = ggml.mul_mat(self.w(f"{name}.weight", cur.ne[0], n_out), cur)
        if self.has(f"{name}.bias"):
            cur = ggml.add(cur, self.w(f"{name}.bias", n_out))
        return cur

    def qkv(self, cur: Tensor, il: int) -> tuple[Tensor, Tensor, Tensor]:
        """``build_qkv``: separate projections (with biases) reshaped to heads, or 3D
        views of one fused product (nomic-bert)."""
        layer, head_dim = self.shape.layers[il], self.shape.head_dim_k
        n_tokens, prefix = cur.ne[1], f"blk.{il}.attn_"
        heads = (("q", layer.n_head), ("k", layer.n_head_kv), ("v", layer.n_head_kv))
        if not layer.fused_qkv:
            q, k, v = (
                ggml.reshape(self.linear(cur, prefix + role, head_dim * n), head_dim, n, n_tokens)
                for role, n in heads
            )
            return q, k, v
        width = sum(head_dim * n for _role, n in heads)
        fused = self.linear(cur, prefix + "qkv", width)
        row = ggml.row_size(fused.type, head_dim)
        q, k, v = (ggml.view(fused, (head_dim, n, n_tokens), (row, fused.nb[1])) for _r, n in heads)
        return q, k, v

    def attention(self, cur: Tensor, il: int) -> Tensor:
        """Q, K, V (nomic-bert: RoPE on Q and K), then ``build_attn`` with
        ``llm_graph_input_attn_no_cache``."""
        q, k, v = self.qkv(cur, il)
        if self.shape.arch in ROPE_ENCODERS:
            q, k = ggml.rope(q, self.pos), ggml.rope(k, self.pos)
        for tensor in (q, k, v):  # build_attn keeps them together, in this order
            self.graph.expand(tensor)
        cur = attn_mha(self.graph, (q, k, v), self.kq_mask, self.spec, False)
        return self.linear(cur, f"blk.{il}.attn_output", self.shape.n_embd)

    def ffn(self, cur: Tensor, il: int) -> Tensor:
        """``build_ffn``: bert's LLM_FFN_GELU, LLM_FFN_SEQ with biases, down(gelu(up(x)));
        nomic-bert's LLM_FFN_SILU, LLM_FFN_PAR, down(swiglu(gate(x), up(x)))."""
        n_ff, n_embd = self.shape.layers[il].n_ff, self.shape.n_embd
        up = self.linear(cur, f"blk.{il}.ffn_up", n_ff)
        if self.has(f"blk.{il}.ffn_gate.weight"):
            gate = self.linear(cur, f"blk.{il}.ffn_gate", n_ff)
            cur = ggml.glu_split(gate, up)
        else:
            cur = ggml.tanh(up)  # GELU: a unary op
        return self.linear(cur, f"blk.{il}.ffn_down", n_embd)

    def layer(self, inp: Tensor, il: int) -> Tensor:
        """One block: attention, add and norm, FFN, add and norm (post-norms)."""
        cur = self.attention(inp, il)
        if il == self.shape.n_layer - 1:
            cur = ggml.get_rows(cur, self.out_ids)
            inp = ggml.get_rows(inp, self.out_ids)
        ffn_inp = self.norm(ggml.add(cur, inp), f"blk.{il}.attn_output_norm")
        cur = ggml.add(self.ffn(ffn_inp, il), ffn_inp)
        return self.norm(cur, f"blk.{il}.layer_output_norm")


def build_encoder_graph(
    shape: ModelShape, spec: GraphSpec, layer_ids: Sequence[int], plan: DevicePlan
) -> Graph:
    """The graph llama.cpp reserves for an encoder and ``spec``, with only the layers in
    ``layer_ids`` (alike layers add the same nodes; compute.py builds a few)."""
    builder = _Encoder(shape, spec, plan)
    cur = builder.embd
    for il in layer_ids:
        with ggml.on_device(plan.compute[il], plan.weights[il]):
            cur = builder.layer(cur, il)
    builder.graph.expand(cur)
    cur.flags |= FLAG_OUTPUT  # res->t_embd
    with ggml.on_device(plan.output, plan.output_weights):
        build_pooling(builder.graph, shape, spec, cur)
    return builder.graph
