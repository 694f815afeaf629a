"""models_app.estimate_service: model references, storage-root checks, GPUs, and the report."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from core.units import GIB
from models_app import estimate_service
from models_app.estimate_service import EstimateInputError, ModelSource, parse_reference
from models_app.estimator import RunSettings
from tests.factories import GpuFactory, NodeFactory
from tests.gguf.http_server import serve_files


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/srv/models/a.gguf", ModelSource(path="/srv/models/a.gguf")),
        ("https://example.org/a.gguf", ModelSource(url="https://example.org/a.gguf")),
        ("hf://Qwen/Qwen2-GGUF/q4.gguf", ModelSource(hf_repo="Qwen/Qwen2-GGUF", hf_file="q4.gguf")),
        (
            "hf://owner/repo@v1.0/sub/dir/m-00001-of-00002.gguf",
            ModelSource(
                hf_repo="owner/repo", hf_file="sub/dir/m-00001-of-00002.gguf", revision="v1.0"
            ),
        ),
        (
            "https://huggingface.co/owner/repo/blob/main/m.gguf",
            ModelSource(hf_repo="owner/repo", hf_file="m.gguf", revision="main"),
        ),
        (
            "https://huggingface.co/owner/repo/resolve/abc123/m.gguf",
            ModelSource(hf_repo="owner/repo", hf_file="m.gguf", revision="abc123"),
        ),
    ],
)
def test_it_reads_paths_urls_and_hub_references(text, expected):
    assert parse_reference(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "hf://owner", "hf://owner/repo", "hf://owner/repo/"])
def test_it_refuses_empty_or_incomplete_references(text):
    with pytest.raises(EstimateInputError) as error:
        parse_reference(text)
    assert error.value.field == "model"


@pytest.mark.parametrize(
    ("source", "field"),
    [
        (ModelSource(), "source"),
        (ModelSource(path="a.gguf", url="https://x/a.gguf"), "source"),
        (ModelSource(url="ftp://example.org/a.gguf"), "url"),
        (ModelSource(url="file:///etc/passwd"), "url"),
        (ModelSource(hf_repo="not a repo!", hf_file="a.gguf"), "hf_repo"),
        (ModelSource(hf_repo="owner/repo", hf_file="README.md"), "hf_file"),
        (ModelSource(hf_repo="owner/repo", hf_file="../x.gguf"), "hf_file"),
    ],
)
def test_it_refuses_bad_sources_naming_the_field(source, field):
    with pytest.raises(EstimateInputError) as error:
        source.check()
    assert error.value.field == field


def test_it_refuses_a_path_outside_the_storage_roots(storage_root, tmp_path):
    outside = tmp_path / "elsewhere.gguf"
    outside.write_bytes(b"GGUF")
    for text in (str(outside), "../elsewhere.gguf", str(storage_root / ".." / "elsewhere.gguf")):
        with pytest.raises(EstimateInputError, match="inside a storage root"):
            estimate_service.inside_storage_root(text)


def test_it_refuses_a_symlink_that_leaves_the_storage_root(storage_root, tmp_path):
    target = tmp_path / "secret.gguf"
    target.write_bytes(b"GGUF")
    (storage_root / "link.gguf").symlink_to(target)
    with pytest.raises(EstimateInputError, match="inside a storage root"):
        estimate_service.inside_storage_root("link.gguf")


def test_it_resolves_a_relative_path_against_the_first_root(tiny_model):
    assert estimate_service.inside_storage_root("tiny-llama.gguf") == tiny_model.resolve()


def test_it_says_when_the_file_is_missing(storage_root):
    with pytest.raises(EstimateInputError, match="No such file"):
        estimate_service.inside_storage_root("missing.gguf")


def test_it_explains_a_file_that_is_not_gguf(storage_root):
    (storage_root / "junk.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(EstimateInputError, match="Cannot read the model's header") as error:
        estimate_service.load_facts(ModelSource(path="junk.gguf"))
    assert error.value.field == "path"


def test_it_reads_a_local_header_once_until_the_file_changes(tiny_model, monkeypatch):
    calls = []
    real = estimate_service.load_model_facts
    monkeypatch.setattr(
        estimate_service, "load_model_facts", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    first = estimate_service.load_facts(ModelSource(path=str(tiny_model)))
    assert estimate_service.load_facts(ModelSource(path=str(tiny_model))) is first
    os.utime(tiny_model, ns=(1, 1))
    assert estimate_service.load_facts(ModelSource(path=str(tiny_model))) is not first
    assert len(calls) == 2


def test_it_reads_a_remote_header_through_range_requests(tiny_model):
    with serve_files(tiny_model.parent) as (base, state):
        facts = estimate_service.load_facts(ModelSource(url=f"{base}/files/{tiny_model.name}"))
        estimate_service.load_facts(ModelSource(url=f"{base}/files/{tiny_model.name}"))
    assert facts.block_count == 8
    assert len(state.requests) >= 1
    assert all("Range" in request for request in state.requests)
    requests_for_two_estimates = len(state.requests)
    assert requests_for_two_estimates <= 3  # the second estimate came from the cache


def test_it_reads_a_hub_file_from_the_configured_endpoint(tmp_path, tiny_model, monkeypatch):
    repo_dir = tmp_path / "hub" / "owner" / "repo" / "resolve" / "main"
    repo_dir.mkdir(parents=True)
    (repo_dir / "m.gguf").write_bytes(tiny_model.read_bytes())
    with serve_files(tmp_path / "hub") as (base, state):
        monkeypatch.setenv("HF_ENDPOINT", f"{base}/files")
        facts = estimate_service.load_facts(parse_reference("hf://owner/repo/m.gguf"))
    assert facts.embedding_length == 256
    assert state.requests[0]["path"] == "/files/owner/repo/resolve/main/m.gguf"


@pytest.mark.django_db
def test_inventory_gpus_come_in_device_order_sized_by_free_for_placement():
    node = NodeFactory()
    low = GpuFactory(node=node, index=0, priority=10, memory_total=80 * GIB, memory_used=2 * GIB)
    high = GpuFactory(node=node, index=1, priority=90, memory_total=24 * GIB, memory_used=0)
    targets = estimate_service.inventory_targets([low, high])
    assert [t.device.name for t in targets] == ["CUDA0", "CUDA1"]
    assert [t.gpu for t in targets] == [high, low]
    assert targets[0].device.free_bytes == 24 * GIB - high.reserved
    assert targets[1].device.free_bytes == 78 * GIB - low.reserved


@pytest.mark.django_db
def test_it_refuses_disabled_gpus_and_gpus_of_several_nodes():
    disabled = GpuFactory(enabled=False)
    with pytest.raises(EstimateInputError, match="disabled"):
        estimate_service.inventory_targets([disabled])
    with pytest.raises(EstimateInputError, match="several nodes"):
        estimate_service.inventory_targets([GpuFactory(), GpuFactory()])


def test_the_report_plans_layers_and_context_when_gpus_are_given(tiny_model):
    big = estimate_service.hypothetical_targets([8 * GIB])
    report = estimate_service.run(ModelSource(path=str(tiny_model)), RunSettings(n_ctx=2048), big)
    data = estimate_service.report_data(report)
    assert [device["device"] for device in data["devices"]] == ["CUDA0", "CPU"]
    assert data["fits"] is True
    assert data["layers_plan"]["n_gpu_layers"] == 9  # 8 layers and the output layer
    assert data["context_plan"]["n_ctx"] == 4096  # the training context: the search's top
    gpu = data["devices"][0]
    assert gpu["total"] == sum(
        gpu[name] for name in ("weights", "kv_cache", "compute", "output", "overhead")
    )


def test_a_gpu_too_small_gets_a_partial_offload_plan(tiny_model):
    source, run_settings = ModelSource(path=str(tiny_model)), RunSettings(n_ctx=2048)
    roomy = estimate_service.hypothetical_targets([8 * GIB])
    none_on_gpu = estimate_service.run(source, replace(run_settings, n_gpu_layers=0), roomy)
    all_on_gpu = estimate_service.run(source, run_settings, roomy)
    low, high = none_on_gpu.estimate.gpu_total, all_on_gpu.estimate.gpu_total
    small = estimate_service.hypothetical_targets([(low + high) // 2])
    planned = estimate_service.run(source, run_settings, small)
    assert planned.layers_plan is not None and planned.layers_plan.fits
    assert 0 < planned.layers_plan.n_gpu_layers < 9
    assert planned.layers_plan.estimate.gpu_total <= (low + high) // 2
    assert (
        estimate_service.report_data(planned)["fits"] is False
    )  # all layers, as asked, do not fit


def test_a_cpu_only_report_has_no_plans(tiny_model):
    report = estimate_service.run(ModelSource(path=str(tiny_model)), RunSettings())
    assert report.layers_plan is None and report.context_plan is None
    assert [d.device for d in report.estimate.devices] == ["CPU"]


def test_llama_cpp_refusals_become_input_errors():
    with pytest.raises(EstimateInputError, match="flash attention") as error:
        estimate_service.build_settings(type_v="q8_0", flash_attn=False)
    assert error.value.field == "settings"


def test_hypothetical_gpus_must_have_memory():
    with pytest.raises(EstimateInputError):
        estimate_service.hypothetical_targets([0])


def test_local_models_lists_first_shards_only(storage_root: Path):
    for name in ("a.gguf", "b-00001-of-00002.gguf", "b-00002-of-00002.gguf", "notes.txt"):
        (storage_root / name).write_bytes(b"x")
    assert [Path(p).name for p in estimate_service.local_models()] == [
        "a.gguf",
        "b-00001-of-00002.gguf",
    ]


def test_dot_dot_is_refused_even_when_it_stays_inside_the_root(tiny_model, storage_root):
    """The estimate's path guard is the download's: '..' is no honest file name."""
    with pytest.raises(EstimateInputError, match=r"without '\.\.'"):
        estimate_service.inside_storage_root(str(storage_root / "sub" / ".." / "tiny-llama.gguf"))
    with pytest.raises(EstimateInputError, match="inside a storage root"):
        estimate_service.inside_storage_root("tiny\x00llama.gguf")
