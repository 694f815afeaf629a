"""The forward pass of llama / qwen2 / qwen3 / Mixtral-style and qwen3moe MoE models and
gemma2 / gemma3 (post-norms, soft-capping, iSWA) as ggml graphs, mirroring
src/models/llama.cpp, qwen2.cpp, qwen3.cpp, qwen3moe.cpp, gemma2.cpp, gemma3.cpp and
src/llama-graph.cpp (``build_inp_embd``, ``build_norm``, ``build_qkv``, ``build_ffn``,
``build_moe_ffn``).

Weights are external tensors (their memory is not the compute buffer's); their
shapes matter, and their types when a backend has to copy them. ``layer_ids`` may
leave out repeating layers: every layer adds the same nodes, so a graph with a few
of them has the same peak (compute.py relies on it, tests/estimator check it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from models_app.estimator import ggml
from models_app.estimator.attention import (
    AttnInputs,
    AttnOptions,
    GraphSpec,
    attn_inputs,
    build_attn,
    build_attn_k,
    kv_layer,
)
from models_app.estimator.encoder import build_pooling
from models_app.estimator.ggml import (
    FLAG_OUTPUT,
    FLAG_WEIGHTS,
    QUANTIZED,
    TYPE_TRAITS,
    Graph,
    Tensor,
)
from models_app.estimator.recurrent import RsInputs, hybrid_layer, rs_inputs
from models_app.estimator.shape import LayerShape, ModelShape


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """Backends per layer: indices into the scheduler's backends (GPUs first, CPU last)."""

    compute: tuple[int, ...]  # where each repeating layer's nodes run
    weights: tuple[int, ...]  # where each layer's weights live
    kv: tuple[int, ...]  # where each layer's KV cache lives
    core: tuple[int | None, ...]  # where KQ/softmax/KQV run if not on the compute device
    input: int = 0  # token embeddings and the graph inputs
    output: int = 0  # output norm and projection
    output_weights: int = 0

    @classmethod
    def single(cls, n_layer: int, device: int = 0) -> DevicePlan:
        same = (device,) * n_layer
        return cls(same, same, same, (None,) * n_layer, device, device, device)


class _Builder:
    """One graph under construction: the model, the ubatch, and the shared inputs."""

    def __init__(self, shape: ModelShape, spec: GraphSpec, plan: DevicePlan) -> None:
        self.graph, self.shape, self.spec, self.plan = Graph(), shape, spec, plan
        with ggml.on_device(plan.input):
            self.embd = self._inp_embd()
            self.pos = ggml.new_input("I32", (spec.n_tokens,), "inp_pos")
            n_embd_v_gqa = shape.n_head_kv_max * shape.head_dim_v
            self.attn = attn_inputs(spec, n_embd_v_gqa)
            # build_attn_inp_kv_iswa: the sliding-window cache's own indices, mask, rotations
            self.spec_swa = replace(spec, n_kv=spec.n_kv_swa) if spec.n_kv_swa else None
            self.attn_swa: AttnInputs | None = None
            if self.spec_swa is not None:
                self.attn_swa = attn_inputs(self.spec_swa, n_embd_v_gqa)
            self.out_ids = ggml.new_input("I32", (spec.n_outputs,), "out_ids")
            # build_inp_mem_hybrid's recurrent half: the state rows the sequences read
            self.rs: RsInputs | None = rs_inputs(spec) if shape.recurrent is not None else None
            if shape.traits.embd_scale:  # gemma: inpL = ggml_scale(inpL, sqrt(n_embd))
                self.embd = ggml.scale(self.embd)

    def w(self, name: str, *ne: int) -> Tensor:
        """A weight of the model (its file type if it fits the shape, else F32)."""
        type_name = self.shape.weight_types.get(name, "F32")
        if type_name in QUANTIZED and ne[0] % TYPE_TRAITS[type_name][0]:
            type_name = "F32"
        return ggml.external(type_name, ne, name, FLAG_WEIGHTS)

    def _inp_embd(self) -> Tensor:
        tokens = ggml.new_input("I32", (self.spec.n_tokens,), "inp_tokens")
        embd = ggml.new_input("F32", (self.shape.n_embd, self.spec.n_tokens), "inp_embd")
        cur = ggml.get_rows(
            self.w("token_embd.weight", self.shape.n_embd, self.shape.n_vocab), tokens
        )
        self.graph.expand(cur)  # ggml_build_forward_select visits both inputs
        self.graph.expand(embd)
        return cur

    def norm(self, cur: Tensor, name: str) -> Tensor:
        """``build_norm`` with LLM_NORM_RMS and a weight (as wide as ``cur``'s rows)."""
        return ggml.mul(ggml.rms_norm(cur), self.w(name, cur.ne[0]))

    def qkv(self, cur: Tensor, il: int) -> tuple[Tensor, ...]:
        """``build_qkv`` (separate Q/K/V, optional biases), reshaped to heads."""
        shape, layer = self.shape, self.shape.layers[il]
        if layer.fused_qkv:
            return self._fused_qkv(cur, il)
        dims = (
            ("q", shape.head_dim_k, layer.n_head),
            ("k", shape.head_dim_k, layer.n_head_kv),
            ("v", shape.head_dim_v, layer.n_head_kv),
        )
        out = []
        for role, head_dim, n_head in dims:
            width = head_dim * n_head
            proj = ggml.mul_mat(self.w(f"blk.{il}.attn_{role}.weight", shape.n_embd, width), cur)
            if layer.qkv_bias:
                proj = ggml.add(proj, self.w(f"blk.{il}.attn_{role}.bias", width))
            out.append(ggml.reshape(proj, head_dim, n_head, cur.ne[1]))
        return tuple(out)

    def _fused_qkv(self, cur: Tensor, il: int) -> tuple[Tensor, ...]:
        """``build_qkv`` with ``wqkv``: Q, K and V are 3D views of one product."""
        shape, layer = self.shape, self.shape.layers[il]
        dims = (
            (shape.head_dim_k, layer.n_head),
            (shape.head_dim_k, layer.n_head_kv),
            (shape.head_dim_v, layer.n_head_kv),
        )
        width = sum(head_dim * n_head for head_dim, n_head in dims)
        qkv = ggml.mul_mat(self.w(f"blk.{il}.attn_qkv.weight", shape.n_embd, width), cur)
        return tuple(
            ggml.view(
                qkv, (head_dim, n_head, cur.ne[1]), (ggml.row_size(qkv.type, head_dim), qkv.nb[1])
            )
            for head_dim, n_head in dims
        )

    def ffn(self, cur: Tensor, il: int, n_ff: int, kind: str = "") -> Tensor:
        """``build_ffn`` with SILU and a parallel gate: down(swiglu(gate(x), up(x))); phi3's
        (``fused_up``): down(swiglu(up(x))) with gate and up in one matrix. ``kind``:
        ``"_shexp"`` for a shared expert's weights."""
        n_embd = self.shape.n_embd
        if self.shape.traits.fused_up and not kind:
            up = ggml.mul_mat(self.w(f"blk.{il}.ffn_up.weight", n_embd, 2 * n_ff), cur)
            down = self.w(f"blk.{il}.ffn_down.weight", n_ff, n_embd)
            return ggml.mul_mat(down, ggml.glu(up))
        up = ggml.mul_mat(self.w(f"blk.{il}.ffn_up{kind}.weight", n_embd, n_ff), cur)
        gate = ggml.mul_mat(self.w(f"blk.{il}.ffn_gate{kind}.weight", n_embd, n_ff), cur)
        down = self.w(f"blk.{il}.ffn_down{kind}.weight", n_ff, n_embd)
        return ggml.mul_mat(down, ggml.glu_split(gate, up))

    def shared_expert(self, cur: Tensor, il: int, moe_out: Tensor) -> Tensor:
        """qwen2moe: moe_out + ffn_shexp(x) * sigmoid(gate_inp_shexp(x)) (silu(g) / g);
        deepseek2 and glm4moe: moe_out + ffn_shexp(x)."""
        if self.shape.arch != "qwen2moe":  # deepseek2, glm4moe: ungated
            return ggml.add(moe_out, self.ffn(cur, il, self.shape.layers[il].n_ff_shexp, "_shexp"))
        gate_inp = self.w(f"blk.{il}.ffn_gate_inp_shexp.weight", self.shape.n_embd, 1)
        logits = ggml.mul_mat(gate_inp, cur)
        gate = ggml.div(ggml.silu(logits), logits)
        ffn = self.ffn(cur, il, self.shape.layers[il].n_ff_shexp, "_shexp")
        return ggml.add(moe_out, ggml.mul(ffn, gate))

    def moe(self, cur: Tensor, il: int, layer: LayerShape) -> Tensor:
        """``build_moe_ffn`` as the llama graph calls it (softmax gating, normalised weights)."""
        n_embd, n_tokens, n_expert = self.shape.n_embd, cur.ne[1], self.shape.n_expert
        prefix = f"blk.{il}.ffn_"
        selected, weights = self._route(cur, prefix)
        cur = ggml.reshape(cur, n_embd, 1, n_tokens)
        up_exps = self.w(prefix + "up_exps.weight", n_embd, layer.n_ff, n_expert)
        gate_exps = self.w(prefix + "gate_exps.weight", n_embd, layer.n_ff, n_expert)
        down_exps = self.w(prefix + "down_exps.weight", layer.n_ff, n_embd, n_expert)
        up = self._expert_bias(ggml.mul_mat_id(up_exps, cur, selected), prefix + "up", selected)
        gate = ggml.mul_mat_id(gate_exps, cur, selected)
        gate = self._expert_bias(gate, prefix + "gate", selected)
        down = ggml.mul_mat_id(down_exps, ggml.glu_split(gate, up), selected)
        experts = ggml.mul(self._expert_bias(down, prefix + "down", selected), weights)
        self.graph.expand(experts)
        return self._sum_experts(experts, n_tokens)

    def _expert_bias(self, cur: Tensor, name: str, selected: Tensor) -> Tensor:
        """gpt-oss: each chosen expert's bias added (``ggml_add_id``)."""
        bias = name + "_exps.bias"
        if bias not in self.shape.weight_types:
            return cur
        return ggml.add_id(cur, self.w(bias, cur.ne[0], self.shape.n_expert), selected)

    def _route(self, cur: Tensor, prefix: str) -> tuple[Tensor, Tensor]:
        """Expert selection: top-k of the softmax (or sigmoid) gate, plus deepseek2's
        selection bias, the chosen weights normalised (``norm_w``; qwen2moe keeps them as
        they are) and scaled (deepseek2's ``expert_weights_scale``)."""
        n_tokens, n_used, n_expert = cur.ne[1], self.shape.n_expert_used, self.shape.n_expert
        traits = self.shape.traits
        gate_inp = self.w(prefix + "gate_inp.weight", self.shape.n_embd, n_expert)
        logits = ggml.mul_mat(gate_inp, cur)
        if prefix + "gate_inp.bias" in self.shape.weight_types:
            logits = ggml.add(logits, self.w(prefix + "gate_inp.bias", n_expert))
        probs = _gating(logits, traits.moe_gating)
        selection = probs
        bias = prefix.removesuffix("ffn_") + "exp_probs_b.bias"
        if bias in self.shape.weight_types:
            selection = ggml.add(probs, self.w(bias, n_expert))
        selected = ggml.argsort_top_k(selection, n_used)
        weights = ggml.get_rows(ggml.reshape(probs, 1, n_expert, n_tokens), selected)
        if traits.moe_gating == "softmax_weight":
            weights = ggml.soft_max(ggml.reshape(weights, n_used, n_tokens))
            weights = ggml.reshape(weights, 1, n_used, n_tokens)
        if traits.moe_norm_w:
            weights = ggml.reshape(weights, n_used, n_tokens)
            weights = ggml.div(weights, ggml.clamp(ggml.sum_rows(weights)))
            weights = ggml.reshape(weights, 1, n_used, n_tokens)
        if traits.moe_w_scale:
            weights = ggml.scale(weights)
        self.graph.expand(weights)
        return selected, weights

    def _sum_experts(self, experts: Tensor, n_tokens: int) -> Tensor:
        views = []
        for _ in range(self.shape.n_expert_used):
            views.append(ggml.view(experts, (self.shape.n_embd, n_tokens), (experts.nb[2],)))
            self.graph.expand(views[-1])
        out = views[0]
        for item in views[1:]:
            out = ggml.add(out, item)
            self.graph.expand(out)
        return ggml.cont(out) if len(views) == 1 else out

    def attention(self, cur: Tensor, il: int) -> Tensor:
        """Q/K/V, their norms and RoPE, ``build_attn`` and the output projection."""
        shape, layer, plan = self.shape, self.shape.layers[il], self.plan
        if shape.mla is not None:
            return self.mla_attention(cur, il)
        q, k, v = self.qkv(cur, il)
        if layer.qk_norm:  # qwen3, gemma3: RMS norm of each head of Q and K before RoPE
            q = self.norm(q, f"blk.{il}.attn_q_norm.weight")
            k = self.norm(k, f"blk.{il}.attn_k_norm.weight")
        if shape.traits.rope:  # granite-hybrid may have none
            q, k = ggml.rope(q, self.pos), ggml.rope(k, self.pos)
        if shape.traits.q_scale:  # gemma, phi3: Q scaled after RoPE, kq_scale 1
            q = ggml.scale(q)
        spec, inputs = self.spec, self.attn
        if self.spec_swa is not None and self.attn_swa is not None and layer.swa:
            spec, inputs = self.spec_swa, self.attn_swa
        with ggml.on_device(plan.compute[il], plan.kv[il]):
            kv = kv_layer(spec, il, shape.head_dim_k, shape.head_dim_v, layer.n_head_kv)
        sinks = f"blk.{il}.attn_sinks.weight"
        sink = self.w(sinks, layer.n_head) if sinks in shape.weight_types else None
        options = AttnOptions(self.attn_swa is not None, shape.traits.attn_softcap, sink)
        cur = build_attn(self.graph, inputs, kv, (q, k, v), spec, plan.core[il], options)
        cur = ggml.mul_mat(self.w(f"blk.{il}.attn_output.weight", cur.ne[0], shape.n_embd), cur)
        if layer.out_bias:
            cur = ggml.add(cur, self.w(f"blk.{il}.attn_output.bias", shape.n_embd))
        return cur

    def mla_attention(self, cur: Tensor, il: int) -> Tensor:
        """src/models/deepseek2.cpp's MLA branch: Q (through a LoRA or not) and the
        compressed KV with its RoPE part; Q's no-RoPE part absorbed by ``wk_b``; one cached
        head; ``wv_b`` decompresses the attention's output per head."""
        shape, mla, plan = self.shape, self.shape.mla, self.plan
        assert mla is not None
        n_head, n_tokens, kv_lora = shape.layers[il].n_head, cur.ne[1], mla.kv_lora_rank
        q = self._mla_q(cur, il, n_head)
        kv_pe = ggml.mul_mat(
            self.w(f"blk.{il}.attn_kv_a_mqa.weight", shape.n_embd, kv_lora + mla.n_rot), cur
        )
        row = kv_pe.nb[1]
        kv_cmpr = ggml.view(kv_pe, (kv_lora, n_tokens), (row,))
        k_pe = ggml.rope(ggml.view(kv_pe, (mla.n_rot, 1, n_tokens), (row, row)), self.pos)
        kv_cmpr = self.norm(kv_cmpr, f"blk.{il}.attn_kv_a_norm.weight")
        q_nope = ggml.view(q, (mla.head_k - mla.n_rot, n_head, n_tokens), q.nb[1:3])
        q_pe = ggml.rope(ggml.view(q, (mla.n_rot, n_head, n_tokens), q.nb[1:3]), self.pos)
        wk_b = self.w(f"blk.{il}.attn_k_b.weight", mla.head_k - mla.n_rot, kv_lora, n_head)
        absorbed = ggml.mul_mat(wk_b, ggml.permute(q_nope, 0, 2, 1, 3))
        q_cur = ggml.concat(ggml.permute(absorbed, 0, 2, 1, 3), q_pe)
        kv_cmpr = ggml.reshape(kv_cmpr, kv_lora, 1, n_tokens)
        k_cur = ggml.concat(kv_cmpr, k_pe)
        with ggml.on_device(plan.compute[il], plan.kv[il]):
            kv = kv_layer(self.spec, il, shape.head_dim_k, shape.head_dim_v, 1)
        wv_b = self.w(f"blk.{il}.attn_v_b.weight", kv_lora, mla.head_v, n_head)
        qkv = (q_cur, k_cur, kv_cmpr)
        cur = build_attn_k(self.graph, self.attn, kv, qkv, self.spec, wv_b, plan.core[il])
        return ggml.mul_mat(self.w(f"blk.{il}.attn_output.weight", cur.ne[0], shape.n_embd), cur)

    def _mla_q(self, cur: Tensor, il: int, n_head: int) -> Tensor:
        """Q of all heads, ``[head_k, n_head, n_tokens]``: ``wq``, or ``wq_b(norm(wq_a(x)))``."""
        shape, mla = self.shape, self.shape.mla
        assert mla is not None
        width = n_head * mla.head_k
        if mla.q_lora_rank:
            q = ggml.mul_mat(
                self.w(f"blk.{il}.attn_q_a.weight", shape.n_embd, mla.q_lora_rank), cur
            )
            q = self.norm(q, f"blk.{il}.attn_q_a_norm.weight")
            q = ggml.mul_mat(self.w(f"blk.{il}.attn_q_b.weight", mla.q_lora_rank, width), q)
        else:
            q = ggml.mul_mat(self.w(f"blk.{il}.attn_q.weight", shape.n_embd, width), cur)
        return ggml.reshape(q, mla.head_k, n_head, cur.ne[1])

    def layer(self, inp: Tensor, il: int) -> Tensor:
        """One decoder block of src/models/llama.cpp (qwen2.cpp is the same with biases)."""
        if self.shape.recurrent is not None:  # lfm2, granite-hybrid (recurrent.py)
            return hybrid_layer(self, inp, il)
        if self.shape.traits.post_norms:
            return self.gemma_layer(inp, il)
        layer = self.shape.layers[il]
        cur = self.attention(self.norm(inp, f"blk.{il}.attn_norm.weight"), il)
        residual = inp
        if il == self.shape.n_layer - 1 and not self.shape.traits.late_out_ids:
            cur = ggml.get_rows(cur, self.out_ids)
            residual = ggml.get_rows(residual, self.out_ids)
        ffn_inp = ggml.add(cur, residual)
        normed = self.norm(ffn_inp, f"blk.{il}.{self.shape.traits.ffn_norm}.weight")
        cur = self.moe(normed, il, layer) if layer.moe else self.ffn(normed, il, layer.n_ff)
        if layer.n_ff_shexp:
            cur = self.shared_expert(normed, il, cur)
        if self.shape.traits.residual_first:  # phi3
            return ggml.add(ffn_inp, cur)
        return ggml.add(cur, ffn_inp)

    def gemma_layer(self, inp: Tensor, il: int) -> Tensor:
        """A block of src/models/gemma2.cpp / gemma3.cpp: RMS norms after attention and FFN."""
        cur = self.attention(self.norm(inp, f"blk.{il}.attn_norm.weight"), il)
        residual = inp
        if il == self.shape.n_layer - 1:
            cur = ggml.get_rows(cur, self.out_ids)
            residual = ggml.get_rows(residual, self.out_ids)
        cur = self.norm(cur, f"blk.{il}.post_attention_norm.weight")
        sa_out = ggml.add(cur, residual)
        cur = self.norm(sa_out, f"blk.{il}.ffn_norm.weight")
        cur = self.ffn(cur, il, self.shape.layers[il].n_ff)  # GELU instead of SILU: same shapes
        cur = self.norm(cur, f"blk.{il}.post_ffw_norm.weight")
        return ggml.add(cur, sa_out)

    def output(self, cur: Tensor) -> Tensor:
        shape = self.shape
        if shape.traits.late_out_ids:  # gpt-oss
            cur = ggml.get_rows(cur, self.out_ids)
        embd = self.norm(cur, "output_norm.weight")
        if shape.arch == "lfm2" and self.spec.pooling:  # no logits with embeddings on
            embd.flags |= FLAG_OUTPUT
            self.t_embd = embd
            return embd
        name = "token_embd.weight" if shape.tied_embeddings else "output.weight"
        logits = ggml.mul_mat(self.w(name, shape.n_embd, shape.n_vocab), embd)
        if shape.output_bias:
            logits = ggml.add(logits, self.w("output.bias", shape.n_vocab))
        if shape.traits.final_softcap:  # scale, tanh, scale back
            logits = ggml.scale(ggml.tanh(ggml.scale(logits)))
        if shape.traits.logit_scale:  # granite
            logits = ggml.scale(logits)
        embd.flags |= FLAG_OUTPUT
        logits.flags |= FLAG_OUTPUT
        self.t_embd = embd  # res->t_embd: what build_pooling pools
        return logits


def _gating(logits: Tensor, gating: str) -> Tensor:
    """The expert probabilities of ``build_moe_ffn``'s gating op."""
    if gating == "sigmoid":
        return ggml.sigmoid(logits)
    if gating == "softmax_weight":  # the softmax comes after the top-k
        return logits
    return ggml.soft_max(logits)


def build_graph(
    shape: ModelShape,
    spec: GraphSpec,
    layer_ids: Sequence[int],
    plan: DevicePlan | None = None,
) -> Graph:
    """The graph llama.cpp reserves for ``spec``, with only the layers in ``layer_ids``."""
    plan = plan or DevicePlan.single(shape.n_layer)
    builder = _Builder(shape, spec, plan)
    cur = builder.embd
    for il in layer_ids:
        with ggml.on_device(plan.compute[il], plan.weights[il]):
            cur = builder.layer(cur, il)
    with ggml.on_device(plan.output, plan.output_weights):
        logits = builder.output(cur)
    builder.graph.expand(logits)
    with ggml.on_device(plan.output, plan.output_weights):  # embeddings on: the pooling
        build_pooling(builder.graph, shape, spec, builder.t_embd)
    return builder.graph
