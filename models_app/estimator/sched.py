"""The part of ``ggml_backend_sched`` (ggml/src/ggml-backend.cpp) that shapes compute
buffers when a graph runs on several backends: cutting it into splits where the
backend changes, and copying each split's inputs from other backends into its own
buffer (``ggml_backend_sched_split_graph``, passes 5 and 6, and the graph copy).

Nodes arrive already tagged with their backend (``Tensor.device``; a view's is
the one of the tensor it views). A copy is made the first time a backend needs a tensor and
is reused by later splits of that backend. With pipeline parallelism
(``n_copies > 1``) graph inputs and split inputs get ``n_copies`` copies each,
kept for the whole graph.
"""

from __future__ import annotations

from models_app.estimator import ggml
from models_app.estimator.ggml import FLAG_INPUT, FLAG_OUTPUT, FLAG_WEIGHTS, VIEW_OPS, Graph, Tensor


class _Split:
    __slots__ = ("backend", "inputs", "nodes")

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.inputs: list[tuple[Tensor, Tensor]] = []  # (source, its copy on this backend)
        self.nodes: list[Tensor] = []


def _copy_of(src: Tensor, backend: int, n_copies: int, replicas: dict[int, int]) -> Tensor:
    """``ggml_dup_tensor_layout`` of ``src`` on ``backend``, standing for ``n_copies``
    pipeline copies (only the first is used; the others are buffers like it)."""
    copy = ggml.dup_tensor_layout(src, backend)
    if n_copies > 1:
        copy.flags |= FLAG_INPUT | FLAG_OUTPUT
        replicas[id(copy)] = n_copies
    return copy


class _Splitter:
    def __init__(self, n_copies: int, replicas: dict[int, int]) -> None:
        self.n_copies = n_copies
        self.replicas = replicas
        self.splits: list[_Split] = []
        self.copies: dict[tuple[int, int], Tensor] = {}
        self.leafs: list[Tensor] = []  # pipeline copies, allocated up front

    def add(self, node: Tensor) -> None:
        """Put ``node`` in the current split, or start one where the backend changes or a
        weight on another backend has to be copied (so its copy can be freed early)."""
        backend = node.device
        foreign = weight_elsewhere = False  # sources on another backend, weights among them
        for src in node.src:
            if src.device != backend:
                foreign = True
                if src.flags & FLAG_WEIGHTS:
                    weight_elsewhere = True
        split = self.splits[-1] if self.splits else None
        if split is None or split.backend != backend or (weight_elsewhere and split.inputs):
            split = _Split(backend)
            self.splits.append(split)
        if foreign:
            node.src = tuple([self._local(item, split) for item in node.src])
        split.nodes.append(node)

    def _local(self, src: Tensor, split: _Split) -> Tensor:
        if src.device == split.backend:
            return src
        key = (id(src), split.backend)
        copy = self.copies.get(key)
        if copy is None:
            self.copies[key] = copy = _copy_of(src, split.backend, self.n_copies, self.replicas)
            split.inputs.append((src, copy))
            if self.n_copies > 1:
                self.leafs.append(copy)
        return copy


def _input_copies(graph: Graph, n_copies: int, replicas: dict[int, int]) -> list[Tensor]:
    """Pass 6: with pipeline parallelism every graph input is kept in n_copies copies."""
    if n_copies == 1:
        return []
    extra = []
    for leaf in graph.leafs:
        if leaf.flags & FLAG_INPUT:
            leaf.flags |= FLAG_OUTPUT
            extra.append(_copy_of(leaf, leaf.device, n_copies - 1, replicas))
    return extra


def schedule(graph: Graph, n_copies: int = 1) -> Graph:
    """The graph ggml-alloc sees: splits with their input copies allocated up front.

    Pipeline copies of a tensor are one tensor in ``Graph.replicas``: they are buffers
    of the same layout, allocated one after the other and never freed.
    """
    result = Graph()
    input_copies = _input_copies(graph, n_copies, result.replicas)
    splitter = _Splitter(n_copies, result.replicas)
    leading = []
    for node in graph.nodes:
        if node.op in VIEW_OPS:  # views join the current split (the first one if none yet)
            if splitter.splits:
                splitter.splits[-1].nodes.append(node)
            else:
                leading.append(node)
            continue
        splitter.add(node)
    result.leafs = [*input_copies, *splitter.leafs, *graph.leafs]
    result.nodes = leading
    for split in splitter.splits:
        for src, copy in split.inputs:
            dep = ggml.view_tensor(src)  # keeps the source alive until the copy is made
            dep.src = (src,)
            result.nodes.extend((dep, copy))
        result.nodes.extend(split.nodes)
    return result
