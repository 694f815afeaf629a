"""Eviction: which idle instances of lower-priority deployments to stop so that a new
instance fits. A pure function over plain data, next to placement (no Django, no
database).

When ``place`` refuses (a cold start, a scale-up, a new deployment), the scheduler may
stop instances that are:

- idle: no request in flight;
- of a deployment of strictly lower priority than the one asking;
- above their deployment's ``min_replicas`` (``Candidate.above_min``), and a set never
  takes more instances of one deployment than it has to spare (``Candidate.spare``).

Anything else is never evicted.

``choose`` tries sets of such candidates in increasing cost and returns the first set
whose freed memory lets ``place`` fit the instance. Cost (smaller first, compared in
this order):

1. the number of instances stopped (fewest first);
2. the highest deployment priority in the set (lowest first);
3. how recently the set was used: ``-min(idle_seconds)`` (a set is as fresh as its
   freshest member; the longest idle first);
4. the reload cost: instances whose start time was never measured (fewest first), then
   the sum of the measured start times (``reload_seconds``; cheapest first);
5. the sorted instance ids (so the answer is deterministic).

Every member of a set lies on one node, and ``place`` is asked about that node alone
(with the members' memory given back: per GPU ``claimed`` less, ``observed_free`` more,
up to ``total``; host ``ram_free`` more). An instance goes on one node, so memory freed
on another node cannot help it; this also keeps the search small. ``choose`` is meant
for after ``place`` refused on the unchanged fleet: it always evicts at least one.

When the request allows neither several GPUs nor CPU offload, the instance needs
``sizer.single_gpu_need()`` bytes on one GPU, so a set only counts when every member
frees memory on one same usable GPU whose free bytes plus the freed ones reach that
need (a sum, no sizer call). A set with a member that frees nothing there costs more
than the same set without it, which was tried first.

Bounds: per node (with a one-GPU need: per usable GPU) the ``MAX_PER_GROUP``
individually cheapest useful candidates (useful: they free memory on a GPU the request
may use, or host memory when CPU offload is allowed); sets of at most
``max_evictions``; at most ``max_sets`` ``place`` calls (then None).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations

from scheduling.placement import GpuView, NodeView, Placement, Request, Sizer, place

MAX_SETS = 256  # place() calls per choose()
MAX_PER_GROUP = 10  # candidates per node or GPU considered (cheapest alone first)
MAX_EVICTIONS = 4  # instances stopped for one placement

CostKey = tuple[int, int, float, int, float, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A running instance that might be stopped; sizes in bytes."""

    instance_id: str
    deployment_id: str
    served_name: str
    node_id: str
    priority: int  # its deployment's priority
    idle_seconds: float  # since its last request ended
    reload_seconds: float | None  # measured start time; None: never measured (expensive)
    gpu_bytes: Mapping[str, int]  # GPU id -> bytes its claim holds there
    host_bytes: int = 0
    in_flight: int = 0  # requests being served now
    above_min: bool = True  # False: stopping it takes its deployment to/below min_replicas
    spare: int = 1  # instances of its deployment that may stop together (replicas - min)


@dataclass(frozen=True, slots=True)
class Eviction:
    """Stop ``evicted`` (cheapest alone first), then start the instance at ``placement``."""

    placement: Placement
    evicted: tuple[Candidate, ...]

    def lines(self, for_name: str) -> tuple[str, ...]:
        """One ``describe`` line per stopped instance."""
        return tuple(describe(candidate, for_name) for candidate in self.evicted)


def describe(candidate: Candidate, for_name: str) -> str:
    """The line the pages show, e.g. "stopped a (priority 10, idle 4 min, reload ≈ 3 s)
    to start b"."""
    seconds = candidate.reload_seconds
    reload = "reload unknown" if seconds is None else f"reload ≈ {_duration(seconds)}"
    idle = _duration(candidate.idle_seconds)
    details = f"priority {candidate.priority}, idle {idle}, {reload}"
    return f"stopped {candidate.served_name} ({details}) to start {for_name}"


def _duration(seconds: float) -> str:
    """Seconds below a minute, minutes below an hour, else hours (one decimal)."""
    if seconds < 60:
        return f"{round(seconds)} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600, 1):g} h"


def eligible(candidates: Iterable[Candidate], priority: int) -> list[Candidate]:
    """The candidates that may be stopped for a deployment of ``priority``: idle, of a
    strictly lower priority, above their deployment's minimum."""
    return [
        candidate
        for candidate in candidates
        if candidate.in_flight == 0
        and candidate.priority < priority
        and candidate.above_min
        and candidate.spare > 0
    ]


def cost(members: Sequence[Candidate]) -> CostKey:
    """The cost key of stopping ``members`` together (see the module docstring)."""
    measured = [c.reload_seconds for c in members if c.reload_seconds is not None]
    return (
        len(members),
        max(c.priority for c in members),
        -min(c.idle_seconds for c in members),
        len(members) - len(measured),
        sum(measured),
        tuple(sorted(c.instance_id for c in members)),
    )


def choose(
    nodes: Sequence[NodeView],
    request: Request,
    sizer: Sizer,
    candidates: Iterable[Candidate],
    priority: int,
    max_evictions: int = MAX_EVICTIONS,
    max_sets: int = MAX_SETS,
) -> Eviction | None:
    """The cheapest set of instances to stop so that the instance fits, with its
    placement; None when no set (within the bounds) makes room."""
    pool = eligible(candidates, priority)
    if not pool:
        return None
    single = not (request.allow_multi_gpu or request.allow_cpu_offload)
    need = sizer.single_gpu_need() if single else None
    groups = _groups(nodes, request, pool, need)
    tried: set[tuple[str, ...]] = set()
    for size in range(1, max_evictions + 1):
        for node, members in _sets(groups, size, need):
            key = tuple(sorted(c.instance_id for c in members))
            if key in tried:  # the same set from two GPUs it frees memory on
                continue
            if len(tried) >= max_sets:
                return None
            tried.add(key)
            result = place([_freed(node, members)], request, sizer)
            if isinstance(result, Placement):
                return Eviction(result, members)
    return None


@dataclass(frozen=True, slots=True)
class _Group:
    """Candidates that may be stopped together: on one node, and with a one-GPU need,
    freeing memory on one GPU (``gpu_id``, with ``free`` bytes free now)."""

    node: NodeView
    members: tuple[Candidate, ...]  # cheapest alone first, at most MAX_PER_GROUP
    gpu_id: str = ""
    free: int = 0

    def freed(self, members: Sequence[Candidate]) -> int:
        """Bytes ``members`` free on this group's GPU."""
        return sum(candidate.gpu_bytes.get(self.gpu_id, 0) for candidate in members)


def _groups(
    nodes: Sequence[NodeView], request: Request, pool: Sequence[Candidate], need: int | None
) -> list[_Group]:
    """Per node that may take the instance (with a one-GPU need: per usable GPU), the
    candidates whose memory it could use, cheapest alone first."""
    by_node: dict[str, list[Candidate]] = {}
    for candidate in sorted(pool, key=lambda c: cost((c,))):
        by_node.setdefault(candidate.node_id, []).append(candidate)
    groups = []
    for node in sorted(nodes, key=lambda view: view.id):
        here = by_node.get(node.id)
        if not here or not _may_take(node, request):
            continue
        usable = [gpu for gpu in node.gpus if _usable(gpu, request)]
        if need is None:
            ids = {gpu.id for gpu in usable}
            useful = [c for c in here if _useful(c, ids, request)]
            groups.append(_Group(node, tuple(useful[:MAX_PER_GROUP])))
            continue
        for gpu in usable:
            on_gpu = [c for c in here if c.gpu_bytes.get(gpu.id, 0) > 0]
            groups.append(_Group(node, tuple(on_gpu[:MAX_PER_GROUP]), gpu.id, gpu.free))
    return [group for group in groups if group.members]


def _sets(
    groups: Sequence[_Group], size: int, need: int | None
) -> list[tuple[NodeView, tuple[Candidate, ...]]]:
    """Every allowed set of ``size`` candidates of one group, cheapest first; with a
    one-GPU need, only those that free enough on the group's GPU (by a sum)."""
    found = []
    for group in groups:
        if need is not None and not _may_reach(group, size, need):
            continue
        for members in combinations(group.members, size):
            if need is not None and group.free + group.freed(members) < need:
                continue
            if _within_spare(members):
                found.append((cost(members), group.node, members))
    found.sort(key=lambda item: item[0])
    return [(node, members) for _cost, node, members in found]


def _may_reach(group: _Group, size: int, need: int) -> bool:
    """Some ``size`` members of the group may free enough: the largest ones do."""
    largest = sorted((c.gpu_bytes.get(group.gpu_id, 0) for c in group.members), reverse=True)
    return len(largest) >= size and group.free + sum(largest[:size]) >= need


def _within_spare(members: Sequence[Candidate]) -> bool:
    """No deployment loses more instances than it has to spare."""
    taken = Counter(candidate.deployment_id for candidate in members)
    return all(taken[c.deployment_id] <= c.spare for c in members)


def _may_take(node: NodeView, request: Request) -> bool:
    """The node-level checks of placement: accepts work, labels, model reachable."""
    if not node.accepts_work or not (node.has_model or node.can_download):
        return False
    return all(node.labels.get(key) == value for key, value in request.node_labels.items())


def _usable(gpu: GpuView, request: Request) -> bool:
    """The GPU may take work for this request."""
    if request.only_gpus and gpu.id not in request.only_gpus:
        return False
    return gpu.enabled and gpu.present and not gpu.error and gpu.id not in request.exclude_gpus


def _useful(candidate: Candidate, usable: set[str], request: Request) -> bool:
    """Stopping the candidate frees memory the request could use."""
    if request.allow_cpu_offload and candidate.host_bytes > 0:
        return True
    return any(size > 0 and gpu in usable for gpu, size in candidate.gpu_bytes.items())


def _freed(node: NodeView, members: Sequence[Candidate]) -> NodeView:
    """The node as it would be with ``members`` stopped."""
    by_gpu: Counter[str] = Counter()
    for candidate in members:
        by_gpu.update(candidate.gpu_bytes)
    gpus = tuple(_give_back(gpu, by_gpu[gpu.id]) for gpu in node.gpus)
    host = sum(candidate.host_bytes for candidate in members)
    return replace(node, gpus=gpus, ram_free=node.ram_free + host)


def _give_back(gpu: GpuView, size: int) -> GpuView:
    """The GPU with ``size`` bytes of claims released."""
    if size <= 0:
        return gpu
    claimed = max(0, gpu.claimed - size)
    return replace(gpu, claimed=claimed, observed_free=min(gpu.total, gpu.observed_free + size))
