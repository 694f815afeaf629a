"""Where an instance goes: a pure function over plain data (no Django, no database).

``place(nodes, request, sizer)`` picks one node and the GPUs on it for one
instance of a model, or refuses with a reason per candidate. Memory is the only
rule: any models may share a GPU. ``sizer`` answers the memory questions (the
real one, over the estimator, is ``scheduling.placement_sizer.EstimatorSizer``).

Attempts, in order, each only when the request allows it; the first that finds a
fit wins:

1. **one GPU**: ``GpuView.free >= sizer.single_gpu_need()`` (one sizer call in all,
   then one ``on_gpus`` call for the chosen GPU's exact figures);
2. **several GPUs on one node** (``allow_multi_gpu``): per node the fewest GPUs
   that fit, taking the node's GPUs with the most free memory first (ties: device
   order), at most ``max_gpus``;
3. **partial CPU offload** (``allow_cpu_offload``): as many layers as fit on the
   node's GPU with the most free memory (with ``allow_multi_gpu``: its ``max_gpus``
   GPUs with the most free memory), the rest in host RAM;
4. **CPU only** (``allow_cpu_offload``): host RAM alone.

Ranking among the fits of one attempt (smaller key first):

- nodes that already hold the model first;
- several GPUs: fewer GPUs first; partial offload: more layers on the GPUs first;
- higher GPU priority (of several GPUs: the lowest priority among them);
- policy: ``binpack`` least memory left after placing (GPU memory; CPU only: RAM),
  ``spread`` fewest ``replicas_here`` first, then most memory left;
- node name, node id, first GPU's index.

Speed: candidates are worked out once per call. Attempt 1 compares numbers only.
Attempt 2 tries nodes in the order of a predicted rank (exact on the first three
ranking criteria, which only get worse when more GPUs are needed) and stops once
the prediction cannot beat the best fit, after ``MULTI_FITS`` fits or after
``MULTI_CALLS`` sizer calls; the policy criterion is therefore the best among
those fits; ``on_gpus`` answers are memoised per call by the free sizes (fleets
have many identical GPUs). Attempt 3 asks the sizer about at most
``PARTIAL_TRIES`` distinct sets of free sizes (of the nodes that hold the model
first, then of those with the most GPU memory); each answer serves every node
with those sizes, whose RAM is then compared with the answer's host bytes.
Attempt 4 asks the sizer once and compares RAM per node. So neither answer may
depend on the node's RAM other than by refusing.

GPUs are given in device order (priority desc, then index) to the sizer and in
the ``Placement``.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduling.placement.candidates import Memo, candidates_for
from scheduling.placement.data import (
    MULTI_CALLS,
    MULTI_FITS,
    PARTIAL_TRIES,
    PLAUSIBLE_SHARE,
    REASON_LIMIT,
    Fit,
    GpuView,
    Kind,
    NodeView,
    Placement,
    Policy,
    Refusal,
    Request,
    Sizer,
)
from scheduling.placement.reasons import Reasons
from scheduling.placement.search import Search, refusal_for

__all__ = [
    "MULTI_CALLS", "MULTI_FITS", "PARTIAL_TRIES", "PLAUSIBLE_SHARE",
    "REASON_LIMIT", "Fit", "GpuView", "Kind", "Memo", "NodeView", "Placement", "Policy",
    "Refusal", "Request", "Sizer", "place",
]  # fmt: skip


def place(
    nodes: Sequence[NodeView], request: Request, sizer: Sizer, memo: Memo | None = None
) -> Placement | Refusal:
    """The best place for one instance (see the module docstring), or why there is none.

    ``memo``: reuse the work on nodes whose views did not change since the last call
    with the same request and memo (the answer is the same as without it)."""
    reasons = Reasons()
    search = Search(candidates_for(nodes, request, reasons, memo), request, sizer, reasons)
    for attempt in search.attempts():
        placement = attempt()
        if placement is not None:
            return placement
    return refusal_for(search)
