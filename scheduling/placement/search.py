"""The four attempts of one ``place`` call, and the refusal when none fits."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from scheduling.placement.candidates import Candidate, Key, Slot, lowest_priority
from scheduling.placement.data import (
    LEFT_STEP,
    MULTI_CALLS,
    MULTI_FITS,
    PARTIAL_TRIES,
    PLAUSIBLE_SHARE,
    REASON_LIMIT,
    Fit,
    Kind,
    NodeView,
    Placement,
    Policy,
    Refusal,
    Request,
    Sizer,
)
from scheduling.placement.reasons import (
    CPU_ROOM,
    GPU_ROOM,
    GPU_STATE,
    MULTI_ROOM,
    PARTIAL_ROOM,
    Reasons,
    gpu_label,
    size_text,
)

Option = tuple[Key, Candidate, tuple[Slot, ...], Fit]


def _policy_key(request: Request, node: NodeView, left: int) -> tuple[int, ...]:
    steps = left // LEFT_STEP  # readings' noise must not decide between equal GPUs
    if request.policy is Policy.SPREAD:
        return (node.replicas_here, -steps)
    return (steps,)


def _tail(candidate: Candidate, slots: tuple[Slot, ...]) -> tuple[object, ...]:
    first = slots[0][0].index if slots else -1
    return (candidate.node.name, candidate.node.id, first)


def _left(slots: tuple[Slot, ...], fit: Fit) -> int:
    return sum(free for _gpu, free in slots) - sum(fit.gpu_bytes)


class Search:
    """One ``place`` call: the candidates, memoised sizer answers, the attempts."""

    def __init__(
        self, candidates: list[Candidate], request: Request, sizer: Sizer, reasons: Reasons
    ) -> None:
        self.candidates = candidates
        self.request = request
        self.sizer = sizer
        self.reasons = reasons
        self.max_gpus = max(request.max_gpus, 0)
        has_gpus = self.max_gpus > 0 and any(c.usable for c in candidates)
        self.need = sizer.single_gpu_need() if has_gpus else None
        self._on_gpus: dict[tuple[int, ...], Fit | None] = {}
        self.tried_multi: set[str] = set()
        self.tried_partial: set[str] = set()

    def on_gpus(self, slots: tuple[Slot, ...]) -> Fit | None:
        free = tuple(free for _gpu, free in slots)
        if free not in self._on_gpus:
            self._on_gpus[free] = self.sizer.on_gpus(free)
        return self._on_gpus[free]

    def attempts(self) -> list[Callable[[], Placement | None]]:
        steps: list[Callable[[], Placement | None]] = []
        if self.need is not None:
            steps.append(self.single)
            if self.request.allow_multi_gpu and self.max_gpus > 1:
                steps.append(self.multi)
            if self.request.allow_cpu_offload:
                steps.append(self.offload)
        if self.request.allow_cpu_offload:
            steps.append(self.cpu_only)
        return steps

    # attempt 1 ------------------------------------------------------------------
    def single(self) -> Placement | None:
        failed: set[int] = set()
        while len(failed) < 4:  # a sizer may refuse what its need promised: the next best
            best = self._best_single(failed)
            if best is None:
                return None
            candidate, position = best
            slot = (candidate.usable[position], candidate.frees[position])
            fit = self.on_gpus((slot,))
            if fit is not None:
                return _placement(candidate, (slot,), fit, Kind.SINGLE_GPU)
            failed.add(id(candidate))
        return None

    def _best_single(self, failed: set[int]) -> tuple[Candidate, int] | None:
        """The best (candidate, GPU position) for one GPU; keys are built per node only."""
        need = self.need
        assert need is not None
        policy = self.request.policy
        best: tuple[Candidate, int] | None = None
        best_key: Key | None = None
        for candidate in self.candidates:
            position, key = candidate.best_single(need, policy)
            if key is None or id(candidate) in failed:
                continue
            if best_key is None or key < best_key:
                best, best_key = (candidate, position), key
        return best

    # attempt 2 ------------------------------------------------------------------
    def multi(self) -> Placement | None:
        need = self.need
        assert need is not None
        plans: list[tuple[Key, Candidate, int]] = []
        for candidate in self.candidates:
            count = candidate.min_gpus(need, self.max_gpus)
            if count is not None:
                plans.append((self._predicted(candidate, count, need), candidate, count))
        plans.sort(key=lambda plan: plan[0])
        best: Option | None = None
        fits = calls = 0
        for predicted, candidate, count in plans:
            if best is not None and (predicted[:3] > best[0][:3] or fits >= MULTI_FITS):
                break
            if calls >= MULTI_CALLS:
                break
            option, used = self._multi_on(candidate, count)
            calls += used
            self.tried_multi.add(candidate.node.id)
            if option is not None:
                fits += 1
                best = option if best is None or option[0] < best[0] else best
        return None if best is None else _placement(*best[1:], Kind.MULTI_GPU)

    def _predicted(self, candidate: Candidate, count: int, need: int) -> Key:
        left = sum(candidate.sorted_frees[:count]) - need
        policy = _policy_key(self.request, candidate.node, left)
        priority = candidate.min_priority(count)
        return (candidate.rank, count, -priority, *policy, *_tail(candidate, ()))

    def _multi_on(self, candidate: Candidate, count: int) -> tuple[Option | None, int]:
        """The fewest GPUs from ``count`` up that hold it on this node, and the sizer calls."""
        calls = 0
        limit = min(self.max_gpus, len(candidate.usable))
        for size in range(count, limit + 1):
            slots = candidate.top(size)
            calls += tuple(free for _gpu, free in slots) not in self._on_gpus
            fit = self.on_gpus(slots)
            if fit is not None:
                policy = _policy_key(self.request, candidate.node, _left(slots, fit))
                key = (candidate.rank, size, -lowest_priority(slots), *policy)
                return ((*key, *_tail(candidate, slots)), candidate, slots, fit), calls
        return None, calls

    # attempt 3 ------------------------------------------------------------------
    def offload_count(self, candidate: Candidate) -> int:
        """How many of a node's GPUs take layers: all (at most ``max_gpus``) or one."""
        if not self.request.allow_multi_gpu:
            return min(1, len(candidate.usable))
        return min(self.max_gpus, len(candidate.usable))

    def offload_slots(self, candidate: Candidate) -> tuple[Slot, ...]:
        """The GPUs that take layers, in device order (those with free memory)."""
        count = self.offload_count(candidate)
        return tuple(slot for slot in candidate.top(count) if slot[1] > 0)

    def _offload_sizes(self, candidate: Candidate) -> tuple[int, ...]:
        if self.offload_count(candidate) == 1:  # the common case, without building slots
            return (candidate.sorted_frees[0],) if candidate.sorted_frees[0] > 0 else ()
        return tuple(free for _gpu, free in self.offload_slots(candidate))

    def offload_groups(self) -> dict[tuple[int, ...], list[Candidate]]:
        """Plausible nodes by their GPUs' free sizes: the ``PARTIAL_TRIES`` sizes of the
        best nodes (holding the model, then most GPU memory), each with every node that
        has them."""
        need = self.need
        assert need is not None
        plans: list[tuple[Key, Candidate]] = []
        for candidate in self.candidates:
            if not candidate.usable:
                continue
            gpu_free = sum(candidate.sorted_frees[: self.offload_count(candidate)])
            if gpu_free and gpu_free + candidate.node.ram_free >= need * PLAUSIBLE_SHARE:
                plans.append(((candidate.rank, -gpu_free, *_tail(candidate, ())), candidate))
        plans.sort(key=lambda plan: plan[0])
        groups: dict[tuple[int, ...], list[Candidate]] = {}
        for _key, candidate in plans:
            sizes = self._offload_sizes(candidate)
            if sizes in groups or len(groups) < PARTIAL_TRIES:
                groups.setdefault(sizes, []).append(candidate)
        return groups

    def offload(self) -> Placement | None:
        """One sizer answer per group; every member ranked on it (slots built for the best)."""
        best: tuple[Key, Candidate, Fit] | None = None
        for sizes, members in self.offload_groups().items():
            fit = self.sizer.partial(sizes, max(member.node.ram_free for member in members))
            self.tried_partial.update(member.node.id for member in members)
            if fit is None:
                continue
            layers = fit.n_gpu_layers if fit.n_gpu_layers >= 0 else 1 << 30
            left = sum(sizes) - sum(fit.gpu_bytes)
            for candidate in members:
                if fit.host_bytes > candidate.node.ram_free:
                    continue
                policy = _policy_key(self.request, candidate.node, left)
                priority = candidate.min_priority(len(sizes))
                key = (candidate.rank, -layers, -priority, *policy, *_tail(candidate, ()))
                if best is None or key < best[0]:
                    best = (key, candidate, fit)
        if best is None:
            return None
        _key, candidate, fit = best
        return _placement(candidate, self.offload_slots(candidate), fit, Kind.PARTIAL_OFFLOAD)

    # attempt 4 ------------------------------------------------------------------
    def cpu_nodes(self) -> list[Candidate]:
        """Candidates for CPU only: with ``only_gpus``, only nodes holding one of them."""
        if not self.request.only_gpus:
            return self.candidates
        return [candidate for candidate in self.candidates if candidate.usable]

    def cpu_only(self) -> Placement | None:
        nodes = self.cpu_nodes()
        if not nodes:
            return None
        fit = self.sizer.cpu_only(max(candidate.node.ram_free for candidate in nodes))
        if fit is None:
            return None
        best: tuple[Key, Candidate] | None = None
        for candidate in nodes:
            left = candidate.node.ram_free - fit.host_bytes
            if left >= 0:
                policy = _policy_key(self.request, candidate.node, left)
                key = (candidate.rank, *policy, *_tail(candidate, ()))
                best = (key, candidate) if best is None or key < best[0] else best
        return None if best is None else _placement(best[1], (), fit, Kind.CPU_ONLY)


def _placement(candidate: Candidate, slots: tuple[Slot, ...], fit: Fit, kind: Kind) -> Placement:
    if len(fit.gpu_bytes) != len(slots):
        raise ValueError(f"the sizer gave {len(fit.gpu_bytes)} GPU sizes for {len(slots)} GPUs")
    return Placement(
        node_id=candidate.node.id,
        kind=kind,
        gpu_ids=tuple(gpu.id for gpu, _free in slots),
        gpu_bytes=fit.gpu_bytes,
        host_bytes=fit.host_bytes,
        n_gpu_layers=fit.n_gpu_layers,
        tensor_split=fit.tensor_split,
        needs_download=not candidate.node.has_model,
    )


# --- refusal ------------------------------------------------------------------------


def _room_reasons(search: Search) -> None:
    """Why the candidates that were looked at did not fit, nearest misses first."""
    reasons, need = search.reasons, search.need
    for candidate in search.candidates:
        if not candidate.node.gpus:
            reasons.add(GPU_STATE, f"{candidate.node.name} has no GPUs")
    if need is not None:
        slots = [(free, c.node, gpu) for c in search.candidates for gpu, free in c.gpus]
        nearest = heapq.nlargest(REASON_LIMIT, slots, key=lambda item: item[0])
        texts = [
            f"{gpu_label(gpu, node)}: needs {size_text(need)}, {size_text(free)} free"
            for free, node, gpu in nearest
        ]
        reasons.add_many(GPU_ROOM, texts, len(slots))
    if need is not None and search.request.allow_multi_gpu and search.max_gpus > 1:
        _multi_reasons(search, need)
    if need is not None and search.request.allow_cpu_offload:
        _partial_reasons(search)
    if search.request.allow_cpu_offload:
        _cpu_reasons(search)


def _multi_reasons(search: Search, need: int) -> None:
    for candidate in search.candidates:
        if len(candidate.usable) < 2:
            continue
        count = min(search.max_gpus, len(candidate.usable))
        together = sum(free for _gpu, free in candidate.by_free[:count])
        name, room = candidate.node.name, f"{size_text(together)} free together"
        if candidate.node.id in search.tried_multi:
            text = f"{name}: does not fit on {count} GPUs ({room})"
        elif candidate.min_gpus(need, count) is not None:
            text = f"{name}: not tried on several GPUs ({room}; at most {MULTI_CALLS} estimates)"
        else:
            text = f"{name}: {count} GPUs have {room}, needs {size_text(need)}"
        search.reasons.add(MULTI_ROOM, text)


def _partial_reasons(search: Search) -> None:
    for candidate in search.candidates:
        slots = search.offload_slots(candidate) if candidate.usable else ()
        if not slots:
            continue
        gpu_free, ram = sum(free for _gpu, free in slots), candidate.node.ram_free
        room = f"{size_text(gpu_free)} free on GPUs, {size_text(ram)} RAM"
        if candidate.node.id in search.tried_partial:
            text = "partial offload does not fit"
        elif gpu_free + ram >= (search.need or 0) * PLAUSIBLE_SHARE:
            text = f"not tried for partial offload (the best {PARTIAL_TRIES} GPU sizes are)"
        else:
            text = "too little memory for partial offload"
        search.reasons.add(PARTIAL_ROOM, f"{candidate.node.name}: {text} ({room})")


def _cpu_reasons(search: Search) -> None:
    nodes = search.cpu_nodes()
    if not nodes:
        return
    fit = search.sizer.cpu_only(1 << 62)
    for candidate in sorted(nodes, key=lambda c: -c.node.ram_free):
        ram = size_text(candidate.node.ram_free)
        needs = "" if fit is None else f"needs {size_text(fit.host_bytes)} RAM, "
        search.reasons.add(CPU_ROOM, f"{candidate.node.name}: CPU only {needs}{ram} free")


def refusal_for(search: Search) -> Refusal:
    reasons, request = search.reasons, search.request
    _room_reasons(search)
    if not search.candidates:
        reasons.notes.insert(0, "no node can take it")
    if not request.allow_multi_gpu:
        reasons.notes.append("splitting across GPUs is not allowed")
    if not request.allow_cpu_offload:
        reasons.notes.append("CPU offload is not allowed")
    return Refusal(reasons.lines())
