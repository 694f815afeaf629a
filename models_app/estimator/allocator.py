"""ggml-alloc's graph allocator (ggml/src/ggml-alloc.c), replayed over a ``Graph``.

``reserve_sizes`` does what ``ggml_gallocr_reserve_n`` does in measure mode: it
walks the nodes in order, allocates each node from a best-fit free list (reusing a
parent's memory in place where ggml allows it), frees every tensor after its last
consumer, and returns the high-water mark of each buffer: the compute buffer size
llama.cpp reports. One buffer per backend; sizes are aligned as the buffer type
asks (32 bytes on the CPU, 128 on CUDA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from models_app.estimator.ggml import FLAG_INPUT, FLAG_OUTPUT, Graph, Tensor

INPLACE_OPS = frozenset(
    {
        "FILL",
        "SCALE",
        "DIAG_MASK_ZERO",
        "DIAG_MASK_INF",
        "ADD",
        "ADD_ID",
        "ADD1",
        "SUB",
        "MUL",
        "DIV",
        "SQR",
        "SQRT",
        "LOG",
        "UNARY",
        "ROPE",
        "ROPE_BACK",
        "SILU_BACK",
        "RMS_NORM",
        "RMS_NORM_BACK",
        "CLAMP",
        "SOFT_MAX",
        "SOFT_MAX_BACK",
    }
)

AllocSize = Callable[[Tensor], int] | None  # None: the tensor's nbytes


def _pad(size: int, alignment: int) -> int:
    return (size + alignment - 1) // alignment * alignment


class DynAllocator:
    """``ggml_dyn_tallocr`` with one chunk: a sorted free list and a high-water mark."""

    __slots__ = ("alignment", "blocks", "max_size")

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment
        self.blocks: list[list[int]] = [[0, 1 << 62]]  # [offset, size], the last one unbounded
        self.max_size = 0

    def alloc(self, size: int) -> int:
        alignment = self.alignment
        size = (size + alignment - 1) // alignment * alignment
        blocks = self.blocks
        last = len(blocks) - 1
        best, best_size = last, 1 << 63  # the last block unless another one fits
        for i in range(last):  # best fit among all but the last block
            block_size = blocks[i][1]
            if size <= block_size <= best_size:
                best, best_size = i, block_size
        block = blocks[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del blocks[best]
        if offset + size > self.max_size:
            self.max_size = offset + size
        return offset

    def free(self, offset: int, size: int) -> None:
        alignment = self.alignment
        size = (size + alignment - 1) // alignment * alignment
        blocks = self.blocks
        for i, block in enumerate(blocks):
            if block[0] + block[1] == offset:  # the freed range follows this block
                block[1] += size
                if i + 1 < len(blocks) and block[0] + block[1] == blocks[i + 1][0]:
                    block[1] += blocks[i + 1][1]
                    del blocks[i + 1]
                return
            if offset + size == block[0]:  # the freed range precedes this block
                block[0] = offset
                block[1] += size
                if i > 0 and blocks[i - 1][0] + blocks[i - 1][1] == offset:
                    blocks[i - 1][1] += block[1]
                    del blocks[i]
                return
        position = 0
        while position < len(blocks) and blocks[position][0] < offset:
            position += 1
        blocks.insert(position, [offset, size])


class GraphAllocator:
    """``ggml_gallocr``: one ``DynAllocator`` per buffer, a tensor's buffer is its ``device``.

    The per-tensor bookkeeping (ggml-alloc's ``hash_node``: children and views still to
    come, whether it owns memory, where) lives in the tensors' own fields.
    """

    def __init__(
        self,
        alignments: Sequence[int],
        alloc_size: Sequence[AllocSize],
    ) -> None:
        self.allocators = [DynAllocator(alignment) for alignment in alignments]
        self.alloc_size = alloc_size
        self.peaks: list[Tensor | None] = [None] * len(alignments)  # what set each high-water mark

    def allocate(self, tensor: Tensor) -> None:
        """``ggml_gallocr_allocate_node``: in place on a dying parent if allowed, else fresh."""
        if not (tensor.allocated or tensor.external or tensor.view_src is not None):
            self._allocate(tensor)

    def _allocate(self, tensor: Tensor) -> None:
        """``allocate`` for a tensor that owns memory and has none yet."""
        tensor.allocated = True
        buffer = tensor.device
        alloc_size = self.alloc_size[buffer]
        tensor.size = size = tensor.nbytes if alloc_size is None else alloc_size(tensor)
        if tensor.op in INPLACE_OPS and self._reuse_parent(tensor):
            return
        tensor.buffer = buffer
        allocator = self.allocators[buffer]
        before = allocator.max_size
        tensor.offset = allocator.alloc(size)
        if allocator.max_size > before:
            self.peaks[buffer] = tensor

    def _reuse_parent(self, tensor: Tensor) -> bool:
        """Take over the memory of a parent this node is the last user of.

        Views are never "own" in ggml-alloc (only non-views are marked allocated), so
        its branch for view parents never fires and is left out here.
        """
        for parent in tensor.src:
            if not parent.allocated or parent.flags & FLAG_OUTPUT:
                continue
            if parent.n_children != 1 or parent.n_views != 0 or not tensor.same_layout(parent):
                continue
            tensor.buffer, tensor.offset = parent.buffer, parent.offset
            parent.allocated = False
            allocator = self.allocators[parent.buffer]
            parent_size = _pad(parent.size, allocator.alignment)
            own_size = _pad(tensor.size, allocator.alignment)
            if parent_size > own_size:
                allocator.free(parent.offset + own_size, parent_size - own_size)
            return True
        return False

    def _replicate(self, tensor: Tensor) -> None:
        """One more buffer like ``tensor``'s next to it (a copy that is never freed)."""
        allocator = self.allocators[tensor.buffer]
        before = allocator.max_size
        allocator.alloc(tensor.size)
        if allocator.max_size > before:
            self.peaks[tensor.buffer] = tensor

    def run(self, graph: Graph, fresh: bool = False) -> list[int]:
        """``ggml_gallocr_alloc_graph_impl``; returns each buffer's size.

        ``fresh``: the graph's tensors were never allocated (skips clearing them).

        ggml-alloc allocates a node's parents before the node; here they always are
        already: every parent is a leaf (allocated first) or an earlier node, and stays
        allocated until its last consumer (or a node taking its memory in place, which
        only its last consumer does). A node that is its own source is no exception.
        """
        if not fresh:
            _reset(graph)
        allocate, release = self._allocate, self._release
        replicas = graph.replicas
        for leaf in graph.leafs:
            if not (leaf.allocated or leaf.external or leaf.view_src is not None):
                allocate(leaf)
                for _ in range(replicas.get(id(leaf), 1) - 1):
                    self._replicate(leaf)
        self._count_uses(graph)
        for tensor in graph.nodes:
            if not (tensor.allocated or tensor.external or tensor.view_src is not None):
                allocate(tensor)
            for parent in tensor.src:
                parent.n_children -= 1
                if (
                    parent.n_children == 0
                    and parent.n_views == 0
                    and (parent.view_src is not None or parent.allocated)
                ):
                    release(parent)
        return [allocator.max_size for allocator in self.allocators]

    def _count_uses(self, graph: Graph) -> None:
        allocate = self.allocate
        for tensor in graph.nodes:
            if tensor.view_src is not None and tensor.op != "NONE":
                tensor.view_src.n_views += 1
            if tensor.flags & FLAG_INPUT and not tensor.allocated:
                allocate(tensor)
            for parent in tensor.src:
                parent.n_children += 1
                if parent.flags & FLAG_INPUT and not parent.allocated:
                    allocate(parent)

    def _release(self, parent: Tensor) -> None:
        """A tensor with no consumers or views left: free it, or its root once unused.
        Outputs keep their memory."""
        root = parent.view_src
        if root is not None:
            root.n_views -= 1
            if root.n_views or root.n_children or not root.allocated:
                return
            parent = root
        elif not parent.allocated:
            return
        if not parent.flags & FLAG_OUTPUT:
            self.allocators[parent.buffer].free(parent.offset, parent.size)
            parent.allocated = False


def _reset(graph: Graph) -> None:
    """Clear the bookkeeping (``ggml_hash_set_reset``), so a graph can be allocated again."""
    for tensor in (*graph.leafs, *graph.nodes):
        for item in (tensor, *tensor.src):
            item.n_children = item.n_views = 0
            item.allocated = False
