"""scheduling.placement_sizer.EstimatorSizer: placement's questions answered by the estimator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from core.units import GIB, MIB
from devtools.tiny_gguf import write_tiny_model
from models_app.estimator import GpuDevice, RunSettings, SplitMode, estimate, max_gpu_layers
from models_app.estimator.planner import budget_split
from models_app.gguf import ModelFacts, PartialFileSource, parse_model
from scheduling import placement_sizer
from scheduling.placement import Fit, GpuView, Kind, NodeView, Placement, Request, place
from scheduling.placement_sizer import EstimatorSizer

SETTINGS = RunSettings(n_ctx=4096)


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    path: Path = tmp_path_factory.mktemp("model") / "tiny.gguf"
    (written,) = write_tiny_model(
        path,
        n_layer=8,
        n_embd=256,
        n_head=8,
        n_head_kv=2,
        n_ff=512,
        n_ctx_train=4096,
        header_only=True,
    )
    return parse_model([PartialFileSource(written)])


@pytest.fixture(scope="module")
def between(facts: ModelFacts) -> Callable[[float], int]:
    """``between(share)``: free bytes for one GPU from what it holds with 0 layers offloaded
    (overhead and compute buffer) to what it holds with all of them (share 1.0)."""
    empty = estimate(facts, replace(SETTINGS, n_gpu_layers=0), gpus(80 * GIB)).devices[0].total
    full = estimate(facts, SETTINGS, gpus(80 * GIB)).devices[0].total
    return lambda share: empty + int((full - empty) * share)


def gpus(*free: int) -> list[GpuDevice]:
    return [GpuDevice(f"CUDA{i}", size) for i, size in enumerate(free)]


def test_single_gpu_need_is_one_gpus_total_plus_the_margin(facts: ModelFacts) -> None:
    direct = estimate(facts, SETTINGS, gpus(80 * GIB)).devices[0].total
    assert EstimatorSizer(facts, SETTINGS).single_gpu_need() == direct
    assert EstimatorSizer(facts, SETTINGS, margin_bytes=MIB).single_gpu_need() == direct + MIB


def test_single_gpu_need_offloads_everything_whatever_the_settings_say(facts: ModelFacts) -> None:
    partial = replace(SETTINGS, n_gpu_layers=2)
    assert EstimatorSizer(facts, partial).single_gpu_need() == (
        EstimatorSizer(facts, SETTINGS).single_gpu_need()
    )


def test_on_one_gpu_the_claim_is_the_need(facts: ModelFacts) -> None:
    sizer = EstimatorSizer(facts, SETTINGS, margin_bytes=64 * MIB)
    need = sizer.single_gpu_need()
    fit = sizer.on_gpus([need])
    assert fit is not None
    assert fit.gpu_bytes == (need - 64 * MIB,)
    assert (fit.n_gpu_layers, fit.tensor_split) == (-1, None)
    assert sizer.on_gpus([need - 1]) is None


def test_on_gpus_per_gpu_bytes_equal_a_direct_estimate(facts: ModelFacts) -> None:
    margin = 32 * MIB
    sizer = EstimatorSizer(facts, SETTINGS, margin_bytes=margin)
    free = [600 * MIB, 550 * MIB]
    fit = sizer.on_gpus(free)
    assert fit is not None
    split = budget_split(gpus(*free), SETTINGS, margin)
    direct = estimate(facts, replace(SETTINGS, tensor_split=split), gpus(*free))
    assert fit.gpu_bytes == tuple(device.total for device in direct.devices if device.is_gpu)
    assert fit.host_bytes == direct.cpu.total
    assert fit.tensor_split == split
    assert all(size > SETTINGS.gpu_overhead_bytes + 64 * MIB for size in fit.gpu_bytes)


def test_on_gpus_refuses_when_a_gpu_would_overflow(facts: ModelFacts) -> None:
    sizer = EstimatorSizer(facts, SETTINGS)
    assert sizer.on_gpus([401 * MIB, 401 * MIB]) is None
    assert sizer.on_gpus([0, 0]) is None
    assert sizer.on_gpus([]) is None


def test_split_mode_none_does_not_split(facts: ModelFacts) -> None:
    sizer = EstimatorSizer(facts, replace(SETTINGS, split_mode=SplitMode.NONE))
    assert sizer.on_gpus([8 * GIB, 8 * GIB]) is None
    assert sizer.on_gpus([8 * GIB]) is not None


def test_partial_puts_fewer_layers_when_free_shrinks(
    facts: ModelFacts, between: Callable[[float], int]
) -> None:
    sizer = EstimatorSizer(facts, SETTINGS)
    layers = []
    for share in (1.0, 0.7, 0.4, 0.15):
        fit = sizer.partial([between(share)], 8 * GIB)
        assert fit is not None
        layers.append(fit.n_gpu_layers)
    assert layers[0] == 9  # all 8 layers and the output layer
    assert layers == sorted(layers, reverse=True)
    assert 0 < layers[-1] < layers[1] < layers[0]


@pytest.mark.parametrize("share", [0.05, 0.3, 0.5, 0.77, 0.99, 1.0])
def test_partial_on_one_gpu_matches_the_planner(
    facts: ModelFacts, between: Callable[[float], int], share: float
) -> None:
    sizer = EstimatorSizer(facts, SETTINGS, margin_bytes=MIB)
    free = [between(share) + MIB]
    fit = sizer.partial(free, 8 * GIB)
    plan = max_gpu_layers(facts, SETTINGS, gpus(*free), margin_bytes=MIB)
    assert fit is not None and plan.fits
    assert fit.n_gpu_layers == plan.n_gpu_layers
    assert fit.gpu_bytes == (plan.estimate.devices[0].total,)
    assert fit.host_bytes == plan.estimate.cpu.total
    assert fit.tensor_split is None


def test_partial_on_several_gpus_matches_the_planner(facts: ModelFacts) -> None:
    sizer = EstimatorSizer(facts, SETTINGS)
    free = [480 * MIB, 478 * MIB]
    fit = sizer.partial(free, 8 * GIB)
    plan = max_gpu_layers(facts, SETTINGS, gpus(*free))
    assert fit is not None and plan.fits
    assert (fit.n_gpu_layers, fit.tensor_split) == (plan.n_gpu_layers, plan.tensor_split)
    assert fit.gpu_bytes == tuple(device.total for device in plan.estimate.devices[:2])
    assert 0 < fit.n_gpu_layers < 9


def test_repeated_questions_do_not_estimate_again(
    facts: ModelFacts, between: Callable[[float], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    sizer = EstimatorSizer(facts, SETTINGS)
    first = (sizer.partial([between(0.5)], 8 * GIB), sizer.on_gpus([600 * MIB, 550 * MIB]))
    sizer.single_gpu_need()
    calls = []
    monkeypatch.setattr(placement_sizer, "estimate", lambda *args: calls.append(args))
    assert sizer.on_gpus([600 * MIB, 550 * MIB]) == first[1]
    assert sizer.partial([between(0.5)], 8 * GIB) == first[0]
    assert sizer.on_gpus([between(1.0)]) is not None
    assert sizer.partial([between(0.2)], 8 * GIB) is not None  # the layer counts are known
    assert calls == []


def test_partial_needs_the_host_to_hold_the_rest(
    facts: ModelFacts, between: Callable[[float], int]
) -> None:
    sizer = EstimatorSizer(facts, SETTINGS)
    free = [between(0.5)]
    fit = sizer.partial(free, 8 * GIB)
    assert fit is not None
    assert sizer.partial(free, fit.host_bytes) == fit
    assert sizer.partial(free, fit.host_bytes - 1) is None


def test_partial_refuses_when_not_one_layer_fits(facts: ModelFacts) -> None:
    sizer = EstimatorSizer(facts, SETTINGS)
    assert sizer.partial([100 * MIB], 8 * GIB) is None
    assert sizer.partial([0], 8 * GIB) is None


def test_cpu_only_respects_host_free(facts: ModelFacts) -> None:
    sizer = EstimatorSizer(facts, SETTINGS)
    total = estimate(facts, replace(SETTINGS, n_gpu_layers=0), ()).cpu.total
    assert sizer.cpu_only(total) == Fit((), total, 0, None)
    assert sizer.cpu_only(total - 1) is None


def test_it_drives_place_end_to_end(facts: ModelFacts, between: Callable[[float], int]) -> None:
    sizer = EstimatorSizer(facts, SETTINGS, margin_bytes=MIB)
    free = between(0.5) + MIB
    view = GpuView("g0", "n", 0, "T4", 16 * GIB, 0, 16 * GIB - free, 16 * GIB, 0)
    node = NodeView("n", "node-a", True, {}, True, True, 8 * GIB, (view,))
    result = place([node], Request(allow_cpu_offload=True), sizer)
    assert isinstance(result, Placement)
    assert result.kind is Kind.PARTIAL_OFFLOAD
    assert 0 < result.n_gpu_layers < 9
    assert result.gpu_bytes[0] + MIB <= view.free
    roomy = replace(view, claimed=0)
    whole = place([replace(node, gpus=(roomy,))], Request(), sizer)
    assert isinstance(whole, Placement)
    assert whole.kind is Kind.SINGLE_GPU
    assert whole.gpu_bytes == (sizer.single_gpu_need() - MIB,)
