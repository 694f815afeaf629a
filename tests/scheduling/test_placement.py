"""scheduling.placement: the placement rules, with a linear fake sizer (no estimator)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from core.units import GIB, MIB
from scheduling.placement import (
    MULTI_CALLS,
    PARTIAL_TRIES,
    REASON_LIMIT,
    Fit,
    GpuView,
    Kind,
    Memo,
    NodeView,
    Placement,
    Policy,
    Refusal,
    Request,
    place,
)


@dataclass
class LinearSizer:
    """A model of ``n_layer`` layers of ``layer`` bytes; each GPU used costs ``overhead``;
    the host always holds ``host_base`` (the token embeddings)."""

    n_layer: int = 10
    layer: int = GIB
    overhead: int = GIB // 2
    host_base: int = 256 * MIB
    calls: Counter[str] = field(default_factory=Counter)

    def single_gpu_need(self) -> int:
        self.calls["single_gpu_need"] += 1
        return self.n_layer * self.layer + self.overhead

    def _layers(self, free: Sequence[int]) -> list[int]:
        """Layers per GPU, filled in order up to each GPU's room."""
        left, layers = self.n_layer, []
        for size in free:
            count = min(max((size - self.overhead) // self.layer, 0), left)
            layers.append(count)
            left -= count
        return layers

    def _fit(self, free: Sequence[int], layers: list[int], host: int, ngl: int) -> Fit:
        gpu_bytes = tuple(self.overhead + count * self.layer for count in layers)
        split = tuple(float(size) for size in free) if len(free) > 1 else None
        return Fit(gpu_bytes, host, ngl, split)

    def on_gpus(self, free: Sequence[int]) -> Fit | None:
        self.calls["on_gpus"] += 1
        layers = self._layers(free)
        if sum(layers) < self.n_layer:
            return None
        return self._fit(free, layers, self.host_base, -1)

    def partial(self, free: Sequence[int], host_free: int) -> Fit | None:
        self.calls["partial"] += 1
        layers = self._layers(free)
        placed = sum(layers)
        host = self.host_base + (self.n_layer - placed) * self.layer
        if placed == 0 or host > host_free:
            return None
        return self._fit(free, layers, host, placed)

    def cpu_only(self, host_free: int) -> Fit | None:
        self.calls["cpu_only"] += 1
        host = self.host_base + self.n_layer * self.layer
        return Fit((), host, 0, None) if host <= host_free else None


NEED = LinearSizer().single_gpu_need()  # 10.5 GiB


def gpu(node: str, index: int, free: float, *, total: int = 80 * GIB, **fields: Any) -> GpuView:
    """A GPU with ``free`` GiB for placement: the rest is claimed by our instances."""
    reserved = fields.pop("reserved", 0)
    claimed = total - reserved - int(free * GIB)
    values: dict[str, Any] = {
        "id": f"{node}/{index}",
        "node_id": node,
        "index": index,
        "name": "A100-80GB",
        "total": total,
        "reserved": reserved,
        "claimed": claimed,
        "observed_free": total - claimed,
        "priority": 0,
    }
    return GpuView(**{**values, **fields})


def node(name: str, *free: float, **fields: Any) -> NodeView:
    values: dict[str, Any] = {
        "id": name,
        "name": name,
        "accepts_work": True,
        "labels": {},
        "has_model": True,
        "can_download": True,
        "ram_free": 64 * GIB,
        "gpus": tuple(gpu(name, i, size) for i, size in enumerate(free)),
    }
    return NodeView(**{**values, **fields})


def placed(nodes: Sequence[NodeView], request: Request | None = None, **sizer: Any) -> Placement:
    result = place(nodes, request or Request(), LinearSizer(**sizer))
    assert isinstance(result, Placement), result
    return result


def refused(nodes: Sequence[NodeView], request: Request | None = None, **sizer: Any) -> Refusal:
    result = place(nodes, request or Request(), LinearSizer(**sizer))
    assert isinstance(result, Refusal), result
    return result


# --- free memory --------------------------------------------------------------------


def test_free_is_what_claims_and_reserve_leave() -> None:
    view = GpuView("g", "n", 0, "A100", 80 * GIB, GIB, 30 * GIB, 50 * GIB, 0)
    assert view.free == 49 * GIB


def test_foreign_memory_counts_against_free() -> None:
    # our claims leave 49 GiB, but NVML sees only 20 GiB free: 30 GiB is someone else's
    view = GpuView("g", "n", 0, "A100", 80 * GIB, GIB, 30 * GIB, 20 * GIB, 0)
    assert view.free == 19 * GIB
    busy = replace(view, id="busy", observed_free=10 * GIB)
    roomy = replace(view, id="roomy", index=1, observed_free=40 * GIB)
    result = placed([node("a", gpus=(busy, roomy))])
    assert result.gpu_ids == ("roomy",)


def test_claims_not_yet_in_use_and_foreign_memory_both_count() -> None:
    # 30 GiB claimed by an instance still downloading its file (not in the reading) and
    # 40 GiB used by someone else: only 9 GiB are really left, though NVML sees 40 free.
    view = GpuView("g", "n", 0, "A100", 80 * GIB, GIB, 30 * GIB, 40 * GIB, 0, foreign=40 * GIB)
    assert view.free == 9 * GIB
    result = place([node("a", gpus=(view,))], Request(), LinearSizer())
    assert isinstance(result, Refusal)
    assert "9.0 GiB free" in " ".join(result.reasons)


def test_free_is_never_negative() -> None:
    view = GpuView("g", "n", 0, "A100", 80 * GIB, GIB, 90 * GIB, 0, 0)
    assert view.free == 0


def test_reserved_memory_is_kept_free() -> None:
    tight = gpu("a", 0, 10.0, reserved=GIB)  # 11 GiB unclaimed, 1 GiB of it reserved
    assert tight.free == 10 * GIB
    assert isinstance(place([node("a", gpus=(tight,))], Request(), LinearSizer()), Refusal)


# --- one GPU ------------------------------------------------------------------------


def test_it_places_on_one_gpu_with_the_sizers_figures() -> None:
    result = placed([node("a", 40)])
    assert result == Placement(
        node_id="a",
        kind=Kind.SINGLE_GPU,
        gpu_ids=("a/0",),
        gpu_bytes=(NEED,),
        host_bytes=256 * MIB,
        n_gpu_layers=-1,
        tensor_split=None,
        needs_download=False,
    )


def test_one_gpu_step_asks_the_sizer_for_the_need_once() -> None:
    sizer = LinearSizer()
    nodes = [node(f"n{i}", *[20.0] * 8) for i in range(50)]
    assert isinstance(place(nodes, Request(), sizer), Placement)
    assert sizer.calls == Counter(single_gpu_need=1, on_gpus=1)


def test_binpack_picks_the_tightest_gpu() -> None:
    result = placed([node("a", 70, 12), node("b", 11, 40)])
    assert result.gpu_ids == ("b/0",)


def test_spread_prefers_fewest_replicas_then_most_free() -> None:
    nodes = [
        node("a", 70, replicas_here=1),
        node("b", 12, replicas_here=0),
        node("c", 30, replicas_here=0),
    ]
    assert placed(nodes, Request(policy=Policy.SPREAD)).gpu_ids == ("c/0",)


def test_it_prefers_a_node_that_holds_the_model() -> None:
    nodes = [node("a", 11, has_model=False), node("b", 70)]
    assert placed(nodes).node_id == "b"
    only_download = placed([node("a", 11, has_model=False)])
    assert only_download.needs_download


def test_it_prefers_higher_gpu_priority() -> None:
    low = gpu("a", 0, 11)
    high = gpu("a", 1, 70, priority=5)
    assert placed([node("a", gpus=(low, high))]).gpu_ids == ("a/1",)


def test_ties_break_by_node_name_then_gpu_index() -> None:
    nodes = [node("c", 20, 20), node("b", 20, 20), node("d", 20)]
    assert placed(nodes).gpu_ids == ("b/0",)


def test_any_models_may_share_a_gpu() -> None:
    shared = gpu("a", 0, 12)  # 68 GiB claimed by other instances, of any model
    assert placed([node("a", gpus=(shared,))]).gpu_ids == ("a/0",)


# --- candidates and reasons -----------------------------------------------------------


def test_it_refuses_with_a_reason_per_gpu() -> None:
    result = refused([node("node-a", 7.2, 9), node("node-b", 3)])
    assert result.reasons[:3] == (
        "GPU 1 on node-a: needs 10.5 GiB, 9.0 GiB free",
        "GPU 0 on node-a: needs 10.5 GiB, 7.2 GiB free",
        "GPU 0 on node-b: needs 10.5 GiB, 3.0 GiB free",
    )
    assert "splitting across GPUs is not allowed" in result.reasons
    assert "CPU offload is not allowed" in result.reasons


def test_it_skips_nodes_that_do_not_accept_work() -> None:
    nodes = [node("node-b", 70, accepts_work=False, status="maintenance"), node("node-c", 5)]
    result = refused(nodes)
    assert "node-b is in maintenance" in result.reasons
    off = refused([node("node-d", 70, accepts_work=False, status="offline")])
    assert "node-d is offline" in off.reasons
    assert "no node can take it" in off.reasons


def test_every_node_label_must_match() -> None:
    nodes = [
        node("node-c", 70, labels={"gpu": "a100"}),
        node("node-e", 70, labels={"zone": "us", "gpu": "a100"}),
        node("node-f", 12, labels={"zone": "eu", "gpu": "a100"}),
    ]
    request = Request(node_labels={"zone": "eu", "gpu": "a100"})
    assert placed(nodes, request).node_id == "node-f"
    result = refused(nodes[:2], request)
    assert "node-c lacks label zone=eu" in result.reasons
    assert "node-e has zone=us, not zone=eu" in result.reasons


def test_a_node_without_the_model_must_be_able_to_download_it() -> None:
    nodes = [node("node-d", 70, has_model=False, can_download=False), node("node-e", 12)]
    assert placed(nodes).node_id == "node-e"
    result = refused(nodes[:1])
    assert "node-d has no copy of the model and cannot download it" in result.reasons


def test_disabled_missing_and_failing_gpus_get_no_work() -> None:
    gpus = (
        gpu("node-a", 0, 70, enabled=False),
        gpu("node-a", 1, 70, present=False),
        gpu("node-a", 2, 70, error="GPU is lost"),
    )
    result = refused([node("node-a", gpus=gpus)])
    assert result.reasons[:3] == (
        "GPU 0 on node-a is disabled",
        "GPU 1 on node-a is missing",
        "GPU 2 on node-a reports an error: GPU is lost",
    )


def test_only_and_excluded_gpus_limit_the_candidates() -> None:
    nodes = [node("a", 70, 40, 12)]
    assert placed(nodes, Request(only_gpus=frozenset({"a/0", "a/1"}))).gpu_ids == ("a/1",)
    assert placed(nodes, Request(exclude_gpus=frozenset({"a/2"}))).gpu_ids == ("a/1",)
    result = refused(nodes, Request(only_gpus=frozenset({"z/9"})))
    assert "none of the requested GPUs is on a node that can take it" in result.reasons
    excluded = refused([node("a", 70)], Request(exclude_gpus=frozenset({"a/0"})))
    assert "GPU 0 on a is excluded by the request" in excluded.reasons


def test_reasons_are_bounded_on_a_large_fleet() -> None:
    nodes = [node(f"n{i:04}", *[1.0 + j for j in range(8)]) for i in range(1000)]
    nodes += [node(f"m{i}", 70, accepts_work=False, status="draining") for i in range(30)]
    result = refused(nodes)
    # REASON_LIMIT specific lines shared by the two kinds, a summary each, two notes
    assert len(result.reasons) == REASON_LIMIT + 4
    assert result.reasons[0] == "GPU 7 on n0000: needs 10.5 GiB, 8.0 GiB free"  # nearest miss
    assert "… and 7,990 more GPUs without room" in result.reasons
    assert "… and 20 more nodes not accepting work" in result.reasons
    assert "m0 is draining" in result.reasons


# --- several GPUs -------------------------------------------------------------------


def test_it_splits_across_gpus_only_when_allowed() -> None:
    nodes = [node("a", 6, 6, 6)]
    result = refused(nodes)
    assert "splitting across GPUs is not allowed" in result.reasons
    split = placed(nodes, Request(allow_multi_gpu=True))
    assert split.kind is Kind.MULTI_GPU
    assert split.gpu_ids == ("a/0", "a/1")
    assert split.gpu_bytes == (int(5.5 * GIB), int(5.5 * GIB))
    assert split.tensor_split == (6.0 * GIB, 6.0 * GIB)
    assert split.n_gpu_layers == -1


def test_multi_gpu_uses_the_fewest_gpus_with_the_most_free() -> None:
    result = placed([node("a", 3, 9, 2, 4, 8)], Request(allow_multi_gpu=True))
    assert result.gpu_ids == ("a/1", "a/4")  # device order, not by free


def test_multi_gpu_lists_gpus_in_device_order() -> None:
    gpus = (gpu("a", 0, 6), gpu("a", 1, 6, priority=2), gpu("a", 2, 1))
    result = placed([node("a", gpus=gpus)], Request(allow_multi_gpu=True))
    assert result.gpu_ids == ("a/1", "a/0")


def test_multi_gpu_prefers_fewer_gpus_over_a_tighter_fit() -> None:
    nodes = [node("a", 4, 4, 4, 4), node("b", 9, 9)]
    assert placed(nodes, Request(allow_multi_gpu=True)).node_id == "b"


def test_multi_gpu_prefers_a_node_with_the_model_over_fewer_gpus() -> None:
    nodes = [node("a", 9, 9, has_model=False), node("b", 4, 4, 4, 4)]
    result = placed(nodes, Request(allow_multi_gpu=True))
    assert (result.node_id, len(result.gpu_ids), result.needs_download) == ("b", 4, False)


def test_multi_gpu_takes_one_more_gpu_when_the_overhead_does_not_fit() -> None:
    # 5.3 + 5.3 GiB add up to the 10.5 GiB need, but each GPU used costs 0.5 GiB
    result = placed([node("a", 5.3, 5.3, 5.3)], Request(allow_multi_gpu=True))
    assert len(result.gpu_ids) == 3


def test_multi_gpu_respects_max_gpus() -> None:
    nodes = [node("a", 3, 3, 3, 3, 3)]
    assert len(placed(nodes, Request(allow_multi_gpu=True)).gpu_ids) == 5
    result = refused(nodes, Request(allow_multi_gpu=True, max_gpus=4))
    assert any(line.startswith("a: does not fit on 4 GPUs") for line in result.reasons)


def test_multi_gpu_sizer_calls_are_bounded_on_a_large_fleet() -> None:
    sizer = LinearSizer()
    nodes = [node(f"n{i:04}", *[2.0 + (i % 7) * 0.1] * 8) for i in range(1000)]
    result = place(nodes, Request(allow_multi_gpu=True), sizer)
    assert isinstance(result, Placement)
    # 2.5 GiB GPUs hold 2 layers each: 5 of them, on the tightest such node
    assert (result.node_id, len(result.gpu_ids)) == ("n0005", 5)
    assert sizer.calls["on_gpus"] <= 64


# --- CPU offload --------------------------------------------------------------------


def test_it_offloads_layers_to_the_host_only_when_allowed() -> None:
    nodes = [node("a", 6.5)]
    assert "CPU offload is not allowed" in refused(nodes).reasons
    result = placed(nodes, Request(allow_cpu_offload=True))
    assert result.kind is Kind.PARTIAL_OFFLOAD
    assert result.n_gpu_layers == 6
    assert result.gpu_bytes == (int(6.5 * GIB),)
    assert result.host_bytes == 256 * MIB + 4 * GIB


def test_partial_offload_needs_host_ram() -> None:
    nodes = [node("node-a", 6.5, ram_free=3 * GIB), node("node-b", 6.5, ram_free=GIB)]
    result = refused(nodes, Request(allow_cpu_offload=True))
    assert "node-a: partial offload does not fit (6.5 GiB free on GPUs, 3.0 GiB RAM)" in (
        result.reasons
    )
    assert "node-b: too little memory for partial offload (6.5 GiB free on GPUs, 1.0 GiB RAM)" in (
        result.reasons
    )
    assert any(line.startswith("node-a: CPU only needs 10.2 GiB RAM") for line in result.reasons)


def test_partial_offload_prefers_more_layers_on_the_gpus() -> None:
    nodes = [node("a", 3.5), node("b", 8.5), node("c", 5.5)]
    assert placed(nodes, Request(allow_cpu_offload=True)).node_id == "b"


def test_partial_offload_uses_several_gpus_when_allowed() -> None:
    nodes = [node("a", 3.5, 3.5, 1)]
    one = placed(nodes, Request(allow_cpu_offload=True))
    assert (one.gpu_ids, one.n_gpu_layers) == (("a/0",), 3)
    both = placed(nodes, Request(allow_cpu_offload=True, allow_multi_gpu=True))
    assert both.kind is Kind.PARTIAL_OFFLOAD
    assert both.gpu_ids == ("a/0", "a/1", "a/2")
    assert both.n_gpu_layers == 6


def test_partial_offload_tries_are_capped() -> None:
    sizer = LinearSizer()
    nodes = [node(f"n{i:04}", 2.0 + i * 0.01) for i in range(500)]  # all different
    result = place(nodes, Request(allow_cpu_offload=True), sizer)
    assert isinstance(result, Placement)
    # tried: the 16 with most free (6.84 .. 6.99 GiB), 6 layers each; binpack: the tightest
    assert (result.node_id, result.n_gpu_layers) == ("n0484", 6)
    assert sizer.calls["partial"] == 16


def test_identical_gpus_cost_one_sizer_call() -> None:
    sizer = LinearSizer()
    nodes = [node(f"n{i:04}", 6.5, ram_free=(4 if i < 99 else 5) * GIB) for i in range(100)]
    result = place(nodes, Request(allow_cpu_offload=True), sizer)
    assert isinstance(result, Placement)
    assert result.node_id == "n0099"  # the only one with RAM for the 4.25 GiB left over
    assert sizer.calls["partial"] == 1


def test_cpu_only_when_no_gpu_can_take_a_layer() -> None:
    nodes = [node("a", 0.2, ram_free=20 * GIB), node("b", ram_free=12 * GIB)]
    result = placed(nodes, Request(allow_cpu_offload=True))
    assert result == Placement(
        node_id="b",
        kind=Kind.CPU_ONLY,
        gpu_ids=(),
        gpu_bytes=(),
        host_bytes=256 * MIB + 10 * GIB,
        n_gpu_layers=0,
        tensor_split=None,
        needs_download=False,
    )
    spread = placed(nodes, Request(allow_cpu_offload=True, policy=Policy.SPREAD))
    assert spread.node_id == "a"


def test_cpu_only_respects_free_ram() -> None:
    result = refused([node("node-a", ram_free=8 * GIB)], Request(allow_cpu_offload=True))
    assert "node-a: CPU only needs 10.2 GiB RAM, 8.0 GiB free" in result.reasons
    assert "node-a has no GPUs" in result.reasons


def test_cpu_only_stays_on_nodes_with_a_requested_gpu() -> None:
    nodes = [node("a", 1, ram_free=32 * GIB), node("b", ram_free=11 * GIB)]  # b: tighter
    request = Request(allow_cpu_offload=True, only_gpus=frozenset({"a/0"}))
    assert placed(nodes, request).node_id == "a"


def test_a_model_that_fits_nowhere_is_refused_after_every_attempt() -> None:
    request = Request(allow_multi_gpu=True, allow_cpu_offload=True)
    result = refused([node("node-a", 2, 2, ram_free=GIB)], request)
    assert result.reasons[0] == "GPU 0 on node-a: needs 10.5 GiB, 2.0 GiB free"
    assert any(
        line.startswith("node-a: 2 GPUs have 4.0 GiB free together") for line in result.reasons
    )
    assert not any("not allowed" in line for line in result.reasons)


# --- speed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [Request(), Request(allow_multi_gpu=True), Request(allow_cpu_offload=True)],
    ids=["single", "multi", "partial"],
)
def test_a_large_fleet_asks_the_sizer_a_bounded_number_of_questions(request_: Request) -> None:
    # Timings are in bench/placement; here: the work does not grow with the fleet.
    free = 9.0 if request_ != Request() else 30.0
    nodes = [node(f"n{i:04}", *[free - j * 0.5 for j in range(8)]) for i in range(1000)]
    sizer = LinearSizer()
    result = place(nodes, request_, sizer)
    assert isinstance(result, Placement)
    assert sizer.calls["single_gpu_need"] == 1
    assert sum(sizer.calls.values()) <= 1 + MULTI_CALLS + PARTIAL_TRIES


# --- a memo across calls ------------------------------------------------------------


def _claim(nodes: list[NodeView], result: Placement) -> None:
    """Apply a placement as a pass does: the claimed node's view is replaced."""
    extra = dict(zip(result.gpu_ids, result.gpu_bytes, strict=True))
    for position, view in enumerate(nodes):
        if view.id == result.node_id:
            gpus = tuple(
                replace(g, claimed=g.claimed + extra[g.id], observed_free=g.observed_free)
                if g.id in extra
                else g
                for g in view.gpus
            )
            nodes[position] = replace(view, gpus=gpus, ram_free=view.ram_free - result.host_bytes)


@pytest.mark.parametrize("policy", [Policy.BINPACK, Policy.SPREAD])
def test_a_memo_gives_the_same_answers_as_starting_over(policy: Policy) -> None:
    rng = random.Random(5)
    nodes = [
        node(f"n{i}", *(rng.uniform(0, 40) for _ in range(4)), has_model=rng.random() < 0.5)
        for i in range(30)
    ]
    nodes.append(node("off", 80, 80, accepts_work=False))
    request = Request(policy=policy, allow_multi_gpu=True, allow_cpu_offload=True)
    memo, with_memo, without = Memo(), list(nodes), list(nodes)
    kinds = set()
    for _ in range(400):
        remembered = place(with_memo, request, LinearSizer(), memo)
        fresh = place(without, request, LinearSizer())
        assert remembered == fresh
        if isinstance(fresh, Refusal):
            break
        kinds.add(fresh.kind)
        _claim(with_memo, remembered)
        _claim(without, fresh)
    assert isinstance(fresh, Refusal), "the fleet filled up"
    assert {Kind.SINGLE_GPU, Kind.CPU_ONLY} <= kinds


@pytest.mark.parametrize("noise", [-3, 3])
def test_a_few_mib_of_reading_noise_does_not_decide_between_equal_gpus(noise: int) -> None:
    """The preview and the placement a moment later must agree: GPUs whose free memory
    differs only by a reading's noise rank as equal, and the lower index wins."""
    free = 40.1 + noise * MIB / GIB  # (not at a step's edge: there it can still flip)
    result = placed([node("a", 40.1, free)])
    assert result.gpu_ids == ("a/0",)
