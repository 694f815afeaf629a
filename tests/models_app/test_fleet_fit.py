"""Which GPUs could hold a catalog model (``models_app.fleet_fit.node_fits``): judged by
each GPU's free-for-placement memory, alone or all of a node's together."""

from __future__ import annotations

import pytest

from core.units import GIB
from devtools.tiny_gguf import write_tiny_model
from models_app.fleet_fit import NodeFit, node_fits
from models_app.gguf import load_model_facts
from tests.factories import CatalogModelFactory, GpuFactory, NodeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def facts(tmp_path_factory) -> dict:
    """A 7B-shaped llama header (about 14 GiB of f16 weights): weights dominate."""
    (path,) = write_tiny_model(
        tmp_path_factory.mktemp("fit") / "seven-b.gguf",
        header_only=True,
        n_layer=32,
        n_embd=4096,
        n_head=32,
        n_head_kv=8,
        n_ff=14336,
        n_vocab=32000,
        n_ctx_train=8192,
    )
    return load_model_facts(str(path), partial=True).to_dict()


@pytest.fixture(autouse=True)
def reserve(settings):
    settings.GPUFLEET_RESERVED_DEFAULT = GIB
    return GIB


@pytest.fixture
def model(facts):
    return CatalogModelFactory(facts=facts, context_length=8192)


@pytest.fixture
def needed(model) -> int:
    """What one GPU needs for the model, from a node with one huge GPU."""
    probe = NodeFactory(name="probe")
    GpuFactory(node=probe, index=0, memory_total=1024 * GIB, memory_used=0)
    (fit,) = node_fits(model, [probe])
    assert 10 * GIB < fit.needed < 20 * GIB  # weights alone are 13.5 GiB
    return fit.needed


def gpu(node, index: int, free_for_placement: int, **fields):
    """An idle GPU with ``free_for_placement`` bytes above the 1 GiB reserve."""
    total = free_for_placement + GIB
    return GpuFactory(node=node, index=index, memory_total=total, memory_used=0, **fields)


def fit_of(model, node) -> NodeFit:
    (fit,) = node_fits(model, [node])
    return fit


def test_the_gpus_whose_free_for_placement_memory_holds_the_model_are_named(model, needed):
    node = NodeFactory(name="gpu-a")
    gpu(node, 0, needed - 1)
    gpu(node, 1, needed)
    gpu(node, 2, 2 * needed)
    fit = fit_of(model, node)
    assert (fit.single, fit.split, fit.needed) == (("gpu1", "gpu2"), 0, needed)
    assert fit.fits and fit.summary() == "gpu-a: gpu1, gpu2"


def test_memory_used_by_other_processes_counts_against_a_gpu(model, needed):
    node = NodeFactory()
    total = needed + GIB + 40 * GIB
    GpuFactory(node=node, index=0, memory_total=total, memory_used=40 * GIB)
    GpuFactory(node=node, index=1, memory_total=total, memory_used=40 * GIB + 1)
    assert fit_of(model, node).single == ("gpu0",)


def test_the_reserve_is_kept_free(model, needed, settings):
    node = NodeFactory()
    GpuFactory(node=node, index=0, memory_total=needed, memory_used=0)  # all of it free
    assert fit_of(model, node).single == ()
    settings.GPUFLEET_RESERVED_DEFAULT = 0
    assert fit_of(model, node).single == ("gpu0",)


def test_a_model_no_gpu_holds_alone_is_split_over_all_of_the_nodes_gpus(model, needed):
    node = NodeFactory(name="pair")
    gpu(node, 0, needed * 6 // 10)
    gpu(node, 1, needed * 6 // 10)
    fit = fit_of(model, node)
    assert (fit.single, fit.split) == ((), 2)
    assert fit.fits and fit.summary() == "pair: split over 2 GPUs"


def test_a_node_whose_gpus_are_too_small_even_together_does_not_fit(model, needed):
    node = NodeFactory(name="small")
    gpu(node, 0, needed * 4 // 10)
    gpu(node, 1, needed * 4 // 10)
    fit = fit_of(model, node)
    assert (fit.single, fit.split, fit.fits) == ((), 0, False)
    assert fit.summary() == "small: no"


def test_a_split_is_not_offered_when_one_gpu_holds_it(model, needed):
    node = NodeFactory()
    gpu(node, 0, needed)
    gpu(node, 1, needed * 6 // 10)
    fit = fit_of(model, node)
    assert (fit.single, fit.split) == (("gpu0",), 0)


def test_one_small_gpu_is_no_split(model, needed):
    node = NodeFactory()
    gpu(node, 0, needed // 2)
    assert fit_of(model, node).split == 0


@pytest.mark.parametrize("unusable", [{"enabled": False}, {"present": False}])
def test_disabled_and_vanished_gpus_hold_nothing(model, needed, unusable):
    node = NodeFactory()
    gpu(node, 0, 2 * needed, **unusable)
    gpu(node, 1, needed * 6 // 10)
    gpu(node, 2, needed * 6 // 10)
    fit = fit_of(model, node)
    assert (fit.single, fit.split) == ((), 2)


def test_nodes_without_usable_gpus_are_left_out(model, needed):
    NodeFactory(name="cpu-only")
    gpu(NodeFactory(name="disabled"), 0, 2 * needed, enabled=False)
    gpu(NodeFactory(name="gpu-b"), 0, 2 * needed)
    names = [fit.node for fit in node_fits(model)]
    assert "gpu-b" in names and "probe" in names
    assert "cpu-only" not in names and "disabled" not in names


def test_only_the_nodes_asked_about_are_judged(model, needed):
    first, second = NodeFactory(name="first"), NodeFactory(name="second")
    gpu(first, 0, needed)
    gpu(second, 0, needed)
    assert [fit.node for fit in node_fits(model, [second])] == ["second"]


def test_a_model_is_judged_at_a_usual_context_or_its_own_shorter_one(facts, needed):
    longer = CatalogModelFactory(facts=facts, context_length=32768)
    shorter = CatalogModelFactory(facts=facts, context_length=1024)
    node = NodeFactory()
    gpu(node, 0, 2 * needed)
    assert fit_of(longer, node).needed == needed  # both at 4096 tokens
    assert fit_of(shorter, node).needed < needed


def test_a_model_without_facts_fits_nowhere_known():
    node = NodeFactory()
    gpu(node, 0, 100 * GIB)
    assert node_fits(CatalogModelFactory(facts={}), [node]) == []
