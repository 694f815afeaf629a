"""scheduling.eviction: which idle lower-priority instances to stop so that one fits
(pure, no database; the nodes and the fake sizer are those of the placement tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scheduling.eviction import Candidate, Eviction, choose, describe, eligible
from scheduling.placement import Kind, NodeView, Request
from tests.scheduling.test_placement import GIB, LinearSizer, node

PRIORITY = 50  # the requesting deployment's priority


def candidate(instance_id: str, gpu: str | None = "a/0", size: float = 8, **fields: Any):
    """An idle instance of a lower-priority deployment holding ``size`` GiB on ``gpu``."""
    values: dict[str, Any] = {
        "instance_id": instance_id,
        "deployment_id": f"dep-{instance_id}",
        "served_name": f"model-{instance_id}",
        "node_id": gpu.split("/")[0] if gpu else "a",
        "priority": 10,
        "idle_seconds": 600.0,
        "reload_seconds": 5.0,
        "gpu_bytes": {gpu: int(size * GIB)} if gpu else {},
    }
    return Candidate(**{**values, **fields})


def evict(
    nodes: Sequence[NodeView],
    candidates: Sequence[Candidate],
    request: Request | None = None,
    **options: Any,
) -> Eviction | None:
    return choose(nodes, request or Request(), LinearSizer(), candidates, PRIORITY, **options)


def evicted_ids(result: Eviction | None) -> list[str]:
    assert result is not None
    return [c.instance_id for c in result.evicted]


# --- what may be stopped ------------------------------------------------------------
# The fake model needs 10.5 GiB on one GPU; GPU a/0 has 5 GiB free.


def test_nothing_is_evicted_when_no_eligible_set_frees_enough() -> None:
    small = [candidate("x", size=2), candidate("y", size=3)]
    assert evict([node("a", 5)], small) is None


def test_a_busy_instance_is_never_chosen_even_when_cheapest() -> None:
    busy = candidate("busy", priority=1, idle_seconds=9999, in_flight=1)
    other = candidate("other", priority=20, idle_seconds=10)
    assert evict([node("a", 5)], [busy]) is None
    assert evicted_ids(evict([node("a", 5)], [busy, other])) == ["other"]


def test_instances_of_equal_or_higher_priority_are_never_chosen() -> None:
    equal = candidate("equal", priority=PRIORITY, idle_seconds=9999)
    higher = candidate("higher", priority=PRIORITY + 1, idle_seconds=9999)
    lower = candidate("lower", priority=PRIORITY - 1, idle_seconds=1)
    assert evict([node("a", 5)], [equal, higher]) is None
    assert evicted_ids(evict([node("a", 5)], [equal, higher, lower])) == ["lower"]
    assert eligible([equal, higher, lower], PRIORITY) == [lower]


def test_an_instance_at_min_replicas_is_never_chosen() -> None:
    at_min = candidate("at-min", priority=1, idle_seconds=9999, above_min=False)
    spare = candidate("spare", priority=20, idle_seconds=10)
    assert evict([node("a", 5)], [at_min]) is None
    assert evicted_ids(evict([node("a", 5)], [at_min, spare])) == ["spare"]


def test_a_set_never_takes_more_of_a_deployment_than_it_has_to_spare() -> None:
    # together they free 8 GiB (5 + 8 >= 10.5), alone 4 GiB (not enough)
    halves = [candidate(name, size=4, deployment_id="dep") for name in ("x", "y")]
    assert evict([node("a", 5)], halves) is None
    two_spare = [candidate(name, size=4, deployment_id="dep", spare=2) for name in ("x", "y")]
    assert evicted_ids(evict([node("a", 5)], two_spare)) == ["x", "y"]


# --- the cheapest set ----------------------------------------------------------------


def test_one_big_instance_is_preferred_to_two_small_ones() -> None:
    big = candidate("big", size=8, priority=40, idle_seconds=10, reload_seconds=60)
    smalls = [candidate(name, size=4, priority=1, idle_seconds=9999) for name in ("s1", "s2")]
    assert evicted_ids(evict([node("a", 5)], [*smalls, big])) == ["big"]
    assert evicted_ids(evict([node("a", 5)], smalls)) == ["s1", "s2"]


def test_the_lower_priority_instance_wins() -> None:
    low = candidate("low", priority=5, idle_seconds=10, reload_seconds=60)
    high = candidate("high", priority=30, idle_seconds=9999, reload_seconds=1)
    assert evicted_ids(evict([node("a", 5)], [high, low])) == ["low"]


def test_at_equal_priority_the_longer_idle_instance_wins() -> None:
    long_idle = candidate("long", idle_seconds=3600, reload_seconds=60)
    short_idle = candidate("short", idle_seconds=60, reload_seconds=1)
    assert evicted_ids(evict([node("a", 5)], [short_idle, long_idle])) == ["long"]


def test_at_equal_priority_and_idle_the_cheaper_reload_wins() -> None:
    cheap = candidate("z-cheap", reload_seconds=2)
    dear = candidate("a-dear", reload_seconds=30)
    unknown = candidate("a-unknown", reload_seconds=None)
    assert evicted_ids(evict([node("a", 5)], [dear, cheap])) == ["z-cheap"]
    assert evicted_ids(evict([node("a", 5)], [unknown, dear])) == ["a-dear"]


def test_ties_are_broken_by_instance_id() -> None:
    assert evicted_ids(evict([node("a", 5)], [candidate("b"), candidate("a")])) == ["a"]


# --- where the memory is freed -------------------------------------------------------


def test_memory_freed_on_a_gpu_the_request_excludes_does_not_count() -> None:
    on_a0 = candidate("on-a0", priority=1)
    only_a1 = Request(only_gpus=frozenset({"a/1"}))
    assert evict([node("a", 5, 5)], [on_a0], only_a1) is None
    on_a1 = candidate("on-a1", gpu="a/1", priority=30)
    assert evicted_ids(evict([node("a", 5, 5)], [on_a0, on_a1], only_a1)) == ["on-a1"]


def test_the_placement_lands_on_the_gpu_that_was_freed() -> None:
    result = evict([node("a", 5, 6, 7)], [candidate("x", gpu="a/1")])
    assert result is not None
    assert (result.placement.node_id, result.placement.gpu_ids) == ("a", ("a/1",))
    assert result.placement.kind is Kind.SINGLE_GPU


def test_memory_freed_on_two_nodes_is_not_added_up() -> None:
    halves = [candidate("x", gpu="a/0", size=4), candidate("y", gpu="b/0", size=4)]
    assert evict([node("a", 5), node("b", 5)], halves) is None


def test_several_gpus_of_one_node_are_freed_together_when_multi_gpu_is_allowed() -> None:
    halves = [candidate("x", gpu="a/0", size=4), candidate("y", gpu="a/1", size=4)]
    assert evict([node("a", 3, 3)], halves) is None
    result = evict([node("a", 3, 3)], halves, Request(allow_multi_gpu=True))
    assert evicted_ids(result) == ["x", "y"]
    assert result is not None and result.placement.gpu_ids == ("a/0", "a/1")


def test_host_memory_freed_counts_for_cpu_only() -> None:
    cpu_node = node("a", ram_free=4 * GIB)
    on_host = candidate("host", gpu=None, host_bytes=8 * GIB)
    assert evict([cpu_node], [on_host]) is None  # no CPU offload: host memory is no use
    result = evict([cpu_node], [on_host], Request(allow_cpu_offload=True))
    assert result is not None and result.placement.kind is Kind.CPU_ONLY


def test_the_number_of_place_calls_is_bounded() -> None:
    pairs = [candidate(name, size=4) for name in ("x", "y")]
    request = Request(allow_multi_gpu=True)  # no cheap sum check: every set is placed
    assert evict([node("a", 5)], pairs, request, max_sets=2) is None
    assert evicted_ids(evict([node("a", 5)], pairs, request, max_sets=3)) == ["x", "y"]


# --- what the pages show -------------------------------------------------------------


def test_describe_gives_priority_idle_and_reload() -> None:
    chosen = candidate("x", served_name="llama-8b", idle_seconds=240, reload_seconds=3.2)
    line = describe(chosen, "qwen-32b")
    assert line == "stopped llama-8b (priority 10, idle 4 min, reload ≈ 3 s) to start qwen-32b"


def test_describe_uses_seconds_hours_and_unknown_reload() -> None:
    fresh = candidate("x", served_name="m", idle_seconds=42, reload_seconds=None)
    assert describe(fresh, "n") == "stopped m (priority 10, idle 42 s, reload unknown) to start n"
    old = candidate("x", served_name="m", idle_seconds=5400, reload_seconds=90)
    assert describe(old, "n") == "stopped m (priority 10, idle 1.5 h, reload ≈ 2 min) to start n"
