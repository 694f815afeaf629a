"""A small model of ggml tensors and graphs: just enough of ggml.c to rebuild the
compute graphs llama.cpp reserves (types, shapes, strides, views, node order).

Every function here mirrors the ggml function of the same name: it creates the
result tensor exactly as ggml does (``ggml_dup_tensor`` gives a contiguous copy of
the shape, views keep the strides they are given and point at the root tensor),
so that the allocator in ``allocator.py`` sees the same graph as ggml-alloc.
Tensors carry no data.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextvars import ContextVar

from models_app.gguf.ggml import TENSOR_TYPES

# type name -> (block size, bytes per block), from ggml's type traits
TYPE_TRAITS: dict[str, tuple[int, int]] = {
    name: (block, size) for name, block, size in TENSOR_TYPES.values()
}
QUANTIZED = frozenset(name for name, (block, _size) in TYPE_TRAITS.items() if block > 1)

FLAG_INPUT = 1
FLAG_OUTPUT = 2
FLAG_WEIGHTS = 1 << 8  # not a ggml flag: the tensor lives in a weights buffer

# ops that never allocate: they describe another tensor's memory
VIEW_OPS = frozenset({"VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE"})

_GRAPH_IDS = itertools.count(1)  # Graph.mark: 0 is "never visited"

# the backends new tensors run on and external tensors live on (set per layer)
_DEVICE: ContextVar[tuple[int, int]] = ContextVar("ggml_device", default=(0, 0))


class on_device:  # used like a function: ``with on_device(1):``
    """New tensors run on ``device``; new external ones live on ``storage`` (default the same)."""

    __slots__ = ("devices", "token")

    def __init__(self, device: int, storage: int | None = None) -> None:
        self.devices = (device, device if storage is None else storage)

    def __enter__(self) -> None:
        self.token = _DEVICE.set(self.devices)

    def __exit__(self, *exc_info: object) -> None:
        _DEVICE.reset(self.token)


def row_size(type_name: str, ne0: int) -> int:
    """``ggml_row_size``: bytes of ``ne0`` elements of ``type_name``."""
    block, size = TYPE_TRAITS[type_name]
    return size * ne0 // block


def contiguous_strides(type_name: str, ne: Sequence[int]) -> tuple[int, int, int, int]:
    """The strides ``ggml_new_tensor`` gives a tensor of ``type_name`` shaped ``ne`` (4 dims)."""
    block, size = TYPE_TRAITS[type_name]
    nb1 = size * (ne[0] // block)
    nb2 = nb1 * ne[1]
    return (size, nb1, nb2, nb2 * ne[2])


def span(type_name: str, ne: Sequence[int], nb: Sequence[int]) -> int:
    """``ggml_nbytes``: the span of memory a tensor of this type, shape and strides covers."""
    if min(ne) <= 0:  # an empty tensor (a view of no rows)
        return 0
    block, size = TYPE_TRAITS[type_name]
    total = size + (ne[0] - 1) * nb[0] if block == 1 else ne[0] * nb[0] // block
    return total + (ne[1] - 1) * nb[1] + (ne[2] - 1) * nb[2] + (ne[3] - 1) * nb[3]


class Tensor:
    """One ggml tensor: type, shape ``ne`` and strides ``nb`` (4 dims), op and sources.

    ``view_src`` is the root tensor whose memory a view uses (as in ggml, never a view
    itself). ``external`` tensors live in buffers of their own (weights, KV cache).
    ``nbytes`` (``ggml_nbytes``) is worked out when the tensor is made: strides other
    than the contiguous ones are given to the constructor (or copied along with
    ``nbytes`` from a tensor of the same layout), never assigned on their own.
    """

    __slots__ = (
        *("type", "ne", "nb", "nbytes", "op", "src", "view_src", "flags", "external", "name"),
        *("device", "mark"),
        *("n_children", "n_views", "allocated", "buffer", "offset", "size"),  # for allocator.py
    )

    def __init__(
        self,
        type_name: str,
        ne: Sequence[int],
        op: str = "NONE",
        src: tuple[Tensor, ...] = (),
        view_src: Tensor | None = None,
        nb: tuple[int, ...] | None = None,
    ) -> None:
        self.type = type_name
        if len(ne) < 4:
            ne = (*ne, 1, 1, 1)[:4]
        elif type(ne) is not tuple:
            ne = tuple(ne)
        self.ne: tuple[int, ...] = ne
        block, size = TYPE_TRAITS[type_name]
        if nb is None:
            ne0 = ne[0]
            nb1 = size * (ne0 // block)
            nb2 = nb1 * ne[1]
            nb3 = nb2 * ne[2]
            nb = (size, nb1, nb2, nb3)
            # ggml_nbytes of contiguous strides: the sum over dims telescopes
            self.nbytes = nb3 * ne[3] + ne0 * size // block - nb1
        else:
            self.nbytes = span(type_name, ne, nb)
        self.nb: tuple[int, ...] = nb
        self.op = op
        self.src = src
        # the backend that runs it, or holds it (a view's is its root's, as the scheduler has it)
        if view_src is None:
            self.device: int = _DEVICE.get()[0]
        else:
            if view_src.view_src is not None:
                view_src = view_src.view_src
            self.device = view_src.device
        self.view_src: Tensor | None = view_src
        self.flags = 0
        self.external = False
        self.name = ""
        self.mark = 0  # the last graph that visited it (Graph.expand)
        # ggml-alloc's per-tensor state (its hash_node), used by allocator.py; it sets
        # buffer, offset and size when it allocates the tensor, before it reads them
        self.n_children = self.n_views = 0
        self.allocated = False
        self.buffer: int
        self.offset: int
        self.size: int

    def same_layout(self, other: Tensor) -> bool:
        """``ggml_are_same_layout``: same type, shape and strides."""
        return self.type == other.type and self.ne == other.ne and self.nb == other.nb

    def __repr__(self) -> str:
        return f"Tensor({self.name or self.op}, {self.type}, {self.ne})"


def new_tensor(type_name: str, ne: Sequence[int], name: str = "") -> Tensor:
    tensor = Tensor(type_name, ne)
    tensor.name = name
    return tensor


def external(type_name: str, ne: Sequence[int], name: str, flags: int = 0) -> Tensor:
    """A tensor that already has memory (a weight or a KV cache tensor)."""
    tensor = Tensor(type_name, ne)
    tensor.name = name
    tensor.flags = flags
    tensor.external = True
    tensor.device = _DEVICE.get()[1]
    return tensor


def new_input(type_name: str, ne: Sequence[int], name: str) -> Tensor:
    tensor = new_tensor(type_name, ne, name)
    tensor.flags |= FLAG_INPUT
    return tensor


def dup_tensor_layout(a: Tensor, device: int) -> Tensor:
    """``ggml_dup_tensor_layout`` on backend ``device``: same type, shape and strides."""
    tensor = Tensor(a.type, a.ne)
    tensor.nb, tensor.nbytes = a.nb, a.nbytes  # the same layout spans the same bytes
    tensor.device = device
    return tensor


def _present(src: tuple[Tensor, ...], optional: Tensor | None) -> tuple[Tensor, ...]:
    """``src`` and an optional last source, if it is set."""
    return src if optional is None else (*src, optional)


def view_tensor(a: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "NONE", (), a, a.nb)


def reshape(a: Tensor, *ne: int) -> Tensor:
    return Tensor(a.type, ne, "RESHAPE", (a,), a)


def view(a: Tensor, ne: Sequence[int], nb: Sequence[int] = ()) -> Tensor:
    """``ggml_view_{1,2,3,4}d`` with ``len(ne)`` dims; ``nb`` gives nb[1:len(ne)]."""
    strides = [TYPE_TRAITS[a.type][1], *nb]
    for dim in range(len(strides), 4):  # the dims past the view's own follow from the last
        strides.append(strides[dim - 1] * (ne[dim - 1] if dim <= len(ne) else 1))
    return Tensor(a.type, ne, "VIEW", (a,), a, tuple(strides))


def permute(a: Tensor, *axes: int) -> Tensor:
    ne, nb = [0] * 4, [0] * 4
    for i, axis in enumerate(axes):
        ne[axis] = a.ne[i]
        nb[axis] = a.nb[i]
    return Tensor(a.type, tuple(ne), "PERMUTE", (a,), a, tuple(nb))


def transpose(a: Tensor) -> Tensor:
    ne, nb = a.ne, a.nb
    return Tensor(
        a.type, (ne[1], ne[0], ne[2], ne[3]), "TRANSPOSE", (a,), a, (nb[1], nb[0], nb[2], nb[3])
    )


def cont(a: Tensor, *ne: int) -> Tensor:
    return Tensor(a.type, ne or a.ne, "CONT", (a,))


def cast(a: Tensor, type_name: str) -> Tensor:
    tensor = Tensor(type_name, a.ne, "CPY", (a,))
    tensor.src = (a, tensor)  # ggml_cast points src[1] at the result itself
    return tensor


def mul_mat(a: Tensor, b: Tensor) -> Tensor:
    return Tensor("F32", (a.ne[1], b.ne[1], b.ne[2], b.ne[3]), "MUL_MAT", (a, b))


def mul_mat_id(a: Tensor, b: Tensor, ids: Tensor) -> Tensor:
    return Tensor("F32", (a.ne[1], ids.ne[0], b.ne[2], 1), "MUL_MAT_ID", (a, b, ids))


def get_rows(a: Tensor, b: Tensor) -> Tensor:
    type_name = "I32" if a.type == "I32" else "F32"
    return Tensor(type_name, (a.ne[0], b.ne[0], b.ne[1], b.ne[2]), "GET_ROWS", (a, b))


def set_rows(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """A view of ``a`` (the destination) with ``b`` written at the rows ``c`` lists."""
    return Tensor(a.type, a.ne, "SET_ROWS", (b, c, a), a, a.nb)


def rms_norm(a: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "RMS_NORM", (a,))


def mul(a: Tensor, b: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "MUL", (a, b))


def add(a: Tensor, b: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "ADD", (a, b))


def div(a: Tensor, b: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "DIV", (a, b))


def clamp(a: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "CLAMP", (a,))


def scale(a: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "SCALE", (a,))


def tanh(a: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "UNARY", (a,))


def add_id(a: Tensor, b: Tensor, ids: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "ADD_ID", (a, b, ids))


def with_src(a: Tensor, extra: Tensor | None) -> Tensor:
    """``a`` with one more source if ``extra`` is set (``ggml_*_add_sinks``)."""
    if extra is not None:
        a.src = (*a.src, extra)
    return a


def concat(a: Tensor, b: Tensor, dim: int = 0) -> Tensor:
    ne = list(a.ne)
    ne[dim] += b.ne[dim]
    return Tensor(a.type, ne, "CONCAT", (a, b))


def cpy(a: Tensor, b: Tensor) -> Tensor:
    """``ggml_cpy``: a view of the destination ``b`` with ``a`` copied into it."""
    return Tensor(b.type, b.ne, "CPY", (a, b), b, b.nb)


def scale_inplace(a: Tensor) -> Tensor:
    """``ggml_scale_inplace``: a view of ``a``, scaled where it is."""
    return Tensor(a.type, a.ne, "SCALE", (a,), a, a.nb)


def ssm_conv(sx: Tensor, c: Tensor) -> Tensor:
    """``ggml_ssm_conv``: ``sx`` [d_conv - 1 + n_t, d_inner, n_s] by kernel ``c`` [d_conv,
    d_inner] gives [d_inner, n_t, n_s]."""
    return Tensor("F32", (c.ne[1], sx.ne[0] - c.ne[0] + 1, sx.ne[2]), "SSM_CONV", (sx, c))


def ssm_scan(
    s: Tensor, x: Tensor, dt: Tensor, a: Tensor, b: Tensor, c: Tensor, ids: Tensor
) -> Tensor:
    """``ggml_ssm_scan`` (K = 1): the outputs ``y`` (as many as ``x``) then the new states
    of the ``ids`` sequences, in one F32 vector."""
    n_y = x.ne[0] * x.ne[1] * x.ne[2] * x.ne[3]
    n_states = s.ne[0] * s.ne[1] * s.ne[2] * ids.ne[0]
    return Tensor("F32", (n_y + n_states,), "SSM_SCAN", (s, x, dt, a, b, c, ids))


def sigmoid(a: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "UNARY", (a,))


def rope(a: Tensor, pos: Tensor, freqs: Tensor | None = None) -> Tensor:
    return Tensor(a.type, a.ne, "ROPE", _present((a, pos), freqs))


def soft_max(a: Tensor, mask: Tensor | None = None) -> Tensor:
    return Tensor(a.type, a.ne, "SOFT_MAX", _present((a,), mask))


def glu_split(a: Tensor, b: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "GLU", (a, b))


def glu(a: Tensor) -> Tensor:
    """``ggml_swiglu`` and the like on one tensor: its two halves, gate and up."""
    return Tensor(a.type, (a.ne[0] // 2, *a.ne[1:]), "GLU", (a,))


def silu(a: Tensor) -> Tensor:
    return Tensor(a.type, a.ne, "UNARY", (a,))


def sum_rows(a: Tensor) -> Tensor:
    return Tensor(a.type, (1, a.ne[1], a.ne[2], a.ne[3]), "SUM_ROWS", (a,))


def argsort_top_k(a: Tensor, k: int) -> Tensor:
    order = Tensor("I32", a.ne, "ARGSORT", (a,))
    return view(order, (k, *order.ne[1:]), order.nb[1:])


def flash_attn_ext(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    ne = (v.ne[0], q.ne[2], q.ne[1], q.ne[3])
    return Tensor("F32", ne, "FLASH_ATTN_EXT", _present((q, k, v), mask))


class Graph:
    """``ggml_cgraph``: nodes and leafs in the order ``ggml_build_forward_expand`` visits them.

    A tensor remembers the last graph that visited it (``Tensor.mark``), which stands
    for ggml's visited hash set: build one graph at a time.
    """

    __slots__ = ("leafs", "mark", "nodes", "replicas")

    def __init__(self) -> None:
        self.nodes: list[Tensor] = []
        self.leafs: list[Tensor] = []
        self.mark = next(_GRAPH_IDS)
        # leafs (by id) that stand for several buffers of their layout, and how many
        self.replicas: dict[int, int] = {}

    def expand(self, tensor: Tensor) -> None:
        """Depth-first, sources left to right, as ``ggml_visit_parents_graph`` does."""
        if tensor.mark != self.mark:
            self._visit(tensor)

    def _visit(self, tensor: Tensor) -> None:
        mark = tensor.mark = self.mark
        for child in tensor.src:
            if child.mark == mark:
                continue
            if child.src:
                self._visit(child)
            else:  # the same, without a call: most sources (weights, inputs) have none
                child.mark = mark
                (self.leafs if child.op == "NONE" else self.nodes).append(child)
        (self.leafs if tensor.op == "NONE" else self.nodes).append(tensor)
