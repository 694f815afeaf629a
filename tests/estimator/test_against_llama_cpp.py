"""The estimate matches what llama.cpp itself reports, over the accuracy matrix.

Each case loads a generated model with llama-cpp-python on the CPU (in worker
processes, see devtools/llama_harness.py) and compares every buffer llama.cpp
logs with the estimate. Targets: weights and KV cache within 1 MiB, compute buffer
within 10 %, total within 3 %. In practice the replayed allocator gives the
compute buffer to the byte, which the last test holds it to.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q

from devtools.estimator_matrix import ARCHES, VARIANTS, Case, cases, write_models
from devtools.llama_harness import compare, format_table, measure
from devtools.tiny_gguf import write_tiny_model
from models_app.estimator import estimate
from models_app.gguf import load_model_facts
from scheduling.backend_logs import Reported

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (the estimator is checked against it)",
)

CASES = list(cases())


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Reported]]:
    """Every case of the matrix, loaded by llama.cpp once per test module."""
    paths = write_models(tmp_path_factory.mktemp("estimator-matrix"))
    results = measure([(paths[case.model], case.settings) for case in CASES])
    return {
        case.name: (paths[case.model], result) for case, result in zip(CASES, results, strict=True)
    }


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_the_estimate_matches_what_llama_cpp_reports(
    reported: dict[str, tuple[Path, Reported]], case: Case
) -> None:
    path, result = reported[case.name]
    assert result.error is None, result.error

    rows = compare(estimate(load_model_facts(path), case.settings), result)

    assert all(row.within for row in rows), format_table(rows, case.name)


def test_the_compute_buffer_is_exact_to_the_logged_precision(
    reported: dict[str, tuple[Path, Reported]],
) -> None:
    off = []
    for case in CASES:
        path, result = reported[case.name]
        (row,) = [
            r
            for r in compare(estimate(load_model_facts(path), case.settings), result)
            if r.component == "compute"
        ]
        if abs(row.error) > row.resolution:
            off.append(f"{case.name}: {row.error:+,} bytes")
    assert not off, "\n".join(off)


def test_gemma3_without_sliding_window_and_with_a_capped_untied_output(tmp_path: Path) -> None:
    """gemma3's other graph (one cache, ``build_attn_inp_kv``) and its optional final
    soft-capping, next to the matrix's iSWA gemma3."""
    spec = {**ARCHES["gemma3"], "sliding_window": None, "tied_embeddings": False}
    (path,) = write_tiny_model(tmp_path / "g3.gguf", weight_type=Q.Q8_0, final_softcap=30.0, **spec)
    variants = ["ctx256", "ctx8192-np4-fa-q8-swa", "ctx1000-np2-b512-ub128-swa"]
    results = measure([(path, VARIANTS[name]) for name in variants])

    for name, result in zip(variants, results, strict=True):
        assert result.error is None, result.error
        rows = compare(estimate(load_model_facts(path), VARIANTS[name]), result)
        compute = next(row for row in rows if row.component == "compute")
        assert all(row.within for row in rows), format_table(rows, name)
        assert abs(compute.error) <= compute.resolution, format_table(rows, name)


def test_llama_cpp_loads_a_q8_0_model_and_generates(tmp_path: Path) -> None:
    import llama_cpp

    (path,) = write_tiny_model(tmp_path / "q8.gguf", weight_type=Q.Q8_0, n_embd=128, n_head=4)
    model = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False, seed=1)
    try:
        result = model("hello there", max_tokens=4)
    finally:
        model.close()

    assert result["usage"]["completion_tokens"] >= 1
    assert isinstance(result["choices"][0]["text"], str)
