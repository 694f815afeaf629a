"""Memory learned from measurements: the same file and settings reuse what an instance
measured, other settings get the component that was off corrected (never lowered), and
the estimate page and the API say which figures were learned rather than computed."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import replace

import pytest

from core.units import GIB, MIB
from models_app import estimate_service, learning
from models_app.estimator import GpuDevice, RunSettings, estimate, prepare
from models_app.forms import EstimateForm
from models_app.gguf import ModelFacts, load_model_facts
from models_app.models import MemoryMeasurement
from tests.factories import GpuFactory, NodeFactory
from tests.models_app.learning_helpers import buffers_of

pytestmark = pytest.mark.django_db

PAGE = "/models/estimate/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def computed(path, settings: RunSettings, gpus=()):
    facts = load_model_facts(path)
    return facts, estimate(prepare(facts), settings, list(gpus))


def run(path, settings: RunSettings, targets=()) -> estimate_service.Report:
    return estimate_service.run(
        estimate_service.ModelSource(path=str(path)), settings, list(targets)
    )


def measure(path, settings: RunSettings, kind: str = "cpu", gpus=(), **scale: float):
    """Record a measurement of ``settings`` whose components are the computed ones
    times ``scale``; returns it with its instance id."""
    facts, result = computed(path, settings, gpus)
    instance_id = uuid.uuid4()
    row = learning.record(
        facts, settings, kind, buffers_of(result, **scale), instance_id=instance_id
    )
    assert row is not None
    return row


def form_settings(**extra: object) -> RunSettings:
    data = {
        "model": "x.gguf", "n_ctx": 2048, "n_parallel": 1, "n_batch": 2048, "n_ubatch": 512,
        "cache_type_k": "f16", "cache_type_v": "f16", "n_gpu_layers": -1, "mmap": "on",
        "margin_mib": 0,
    } | extra  # fmt: skip
    form = EstimateForm(data)
    assert form.is_valid(), form.errors
    return form.run_settings()


def test_the_same_file_read_anywhere_has_one_fingerprint(tiny_model, storage_root):
    fresh = load_model_facts(tiny_model)
    stored = ModelFacts.from_dict(json.loads(json.dumps(fresh.to_dict())))
    copy = storage_root / "elsewhere.gguf"
    copy.write_bytes(tiny_model.read_bytes())
    assert learning.fingerprint(stored) == learning.fingerprint(fresh)
    assert learning.fingerprint(load_model_facts(copy)) == learning.fingerprint(fresh)


def test_equivalent_settings_share_a_key_and_different_ones_do_not(tiny_model):
    facts = load_model_facts(tiny_model)
    shape = prepare(facts)
    gpu = [GpuDevice("CUDA0", 24 * GIB)]

    def key(settings: RunSettings) -> str:
        return learning.settings_key(settings, estimate(shape, settings, gpu))

    # -1 and n_layer + 1 GPU layers are the same load; the overhead is no setting of it
    assert key(RunSettings(n_ctx=2048, n_gpu_layers=-1)) == key(
        RunSettings(n_ctx=2048, n_gpu_layers=9, gpu_overhead_bytes=1)
    )
    assert key(RunSettings(n_ctx=2048)) != key(RunSettings(n_ctx=4096))
    assert key(RunSettings(n_ctx=2048)) != key(RunSettings(n_ctx=2048, n_gpu_layers=4))


def test_the_same_settings_reuse_the_measured_figures(tiny_model):
    settings = RunSettings(n_ctx=2048)
    row = measure(tiny_model, settings, compute=1.25, kv_cache=0.5)
    report = run(tiny_model, settings)
    cpu, before = report.estimate.cpu, report.computed.cpu
    assert cpu.compute == row.buffers["CPU"]["compute"] + learning.LOG_PRECISION
    # measured below the computation for these very settings: the measurement is used
    assert cpu.kv_cache == row.buffers["CPU"]["kv_cache"] + learning.LOG_PRECISION
    assert cpu.kv_cache < before.kv_cache
    assert cpu.weights == before.weights  # measured as computed: nothing learned
    learned = report.learned_on("CPU")
    assert set(learned) == {"compute", "kv_cache"}
    source = f"instance #{str(row.instance_id)[:8]} on {row.measured_at:%Y-%m-%d}, CPU"
    assert learned["compute"].source == source and learned["compute"].how == "measured"


def test_other_settings_get_the_component_that_was_off_corrected(tiny_model):
    measure(tiny_model, RunSettings(n_ctx=2048), compute=1.3)
    settings = RunSettings(n_ctx=4096)
    report = run(tiny_model, settings)
    before = report.computed.cpu
    assert report.estimate.cpu.compute == pytest.approx(math.ceil(before.compute * 1.3), rel=1e-3)
    assert report.estimate.cpu.kv_cache == before.kv_cache  # measured right: left as computed
    (figure,) = report.learned
    assert figure.component == "compute" and figure.how.startswith("corrected ×1.3")


def test_an_over_estimate_under_other_settings_never_lowers_an_estimate(tiny_model):
    measure(tiny_model, RunSettings(n_ctx=2048), compute=0.5, weights=0.9)
    report = run(tiny_model, RunSettings(n_ctx=4096))
    assert report.learned == ()
    assert report.computed is None
    assert report.estimate.total == run(tiny_model, RunSettings(n_ctx=4096)).estimate.total


def test_gpu_measurements_teach_estimates_for_gpus_of_their_kind_only(tiny_model):
    node = NodeFactory(name="box")
    l4 = GpuFactory(node=node, index=0, name="NVIDIA L4", memory_total=24 * GIB, memory_used=0)
    a100 = GpuFactory(node=node, index=1, memory_total=80 * GIB, memory_used=0)
    settings = RunSettings(n_ctx=2048)
    measure(tiny_model, settings, "NVIDIA L4", [GpuDevice("CUDA0", 1 << 40)], compute=1.5)
    on_l4 = run(tiny_model, settings, estimate_service.inventory_targets([l4]))
    on_a100 = run(tiny_model, settings, estimate_service.inventory_targets([a100]))
    on_what_if = run(tiny_model, settings, estimate_service.hypothetical_targets([24 * GIB]))
    assert "compute" in on_l4.learned_on("CUDA0")
    assert "NVIDIA L4" in on_l4.learned_on("CUDA0")["compute"].source
    assert on_a100.learned == ()
    assert "compute" in on_what_if.learned_on("CUDA0")  # a GPU of unknown kind: any kind
    assert run(tiny_model, settings).learned == ()  # CPU only: GPU runs teach nothing


def test_nvml_beyond_the_buffers_raises_the_gpu_overhead(tiny_model):
    settings = RunSettings(n_ctx=2048)
    row = measure(tiny_model, settings, "NVIDIA L4", [GpuDevice("CUDA0", 1 << 40)])
    buffers = sum(row.buffers["CUDA0"].values())
    assert learning.record_nvml(row.pk, {"CUDA0": buffers + 900 * MIB})
    assert not learning.record_nvml(row.pk, {"CUDA0": buffers + 500 * MIB})  # lower
    report = run(tiny_model, settings, estimate_service.hypothetical_targets([24 * GIB]))
    overhead = report.learned_on("CUDA0")["overhead"]
    assert overhead.value == 900 * MIB and overhead.how == "NVML per process"
    assert report.estimate.device("CUDA0").overhead == 900 * MIB


def test_a_measurement_without_the_parts_a_load_logs_is_not_stored(tiny_model):
    facts, result = computed(tiny_model, RunSettings(n_ctx=2048))
    settings = RunSettings(n_ctx=2048)
    no_compute = buffers_of(result, compute=0)
    wrong_devices = {"CUDA0": buffers_of(result)["CPU"]}
    assert learning.record(facts, settings, "cpu", no_compute) is None
    assert learning.record(facts, settings, "cpu", wrong_devices) is None
    assert learning.record(facts, settings, "cpu", {}) is None
    assert not MemoryMeasurement.objects.exists()


def test_unreadable_stored_measurements_are_skipped_and_the_estimate_is_computed(tiny_model):
    row = measure(tiny_model, RunSettings(n_ctx=2048), compute=2.0)
    MemoryMeasurement.objects.create(
        model_key=row.model_key, settings_key="x", device_kind="cpu",
        settings={"n_ctx": "many"}, buffers={"CPU": "garbage"},
    )  # fmt: skip
    MemoryMeasurement.objects.filter(pk=row.pk).update(buffers={"CPU": {"weights": -1}})
    report = run(tiny_model, RunSettings(n_ctx=2048))
    assert report.learned == () and report.computed is None


def test_the_estimate_page_marks_the_learned_figures(viewer_client, tiny_model):
    row = measure(tiny_model, form_settings(), compute=1.25)
    html = viewer_client.get(PAGE, {"model": str(tiny_model), **_query()}, **HTMX)
    text = html.content.decode()
    assert html.status_code == 200
    assert 'class="learned-mark"' in text
    assert "Learned rather than computed" in text
    assert f"learned from instance #{str(row.instance_id)[:8]} on " in text
    assert "(measured; computed" in text


def test_the_api_answer_lists_the_learned_figures(viewer_client, tiny_model):
    row = measure(tiny_model, form_settings(n_ctx=1024), compute=1.4)
    body = {"path": str(tiny_model), "settings": {"n_ctx": 2048}}
    response = viewer_client.post("/api/v1/estimate", json.dumps(body), "application/json")
    data = response.json()
    assert response.status_code == 200, data
    (figure,) = data["learned"]
    assert figure["component"] == "compute" and figure["how"].startswith("corrected ×1.4")
    assert figure["source"].startswith(f"instance #{str(row.instance_id)[:8]} on ")
    (cpu,) = data["devices"]
    assert cpu["compute"] == figure["value"] > figure["computed"]
    assert cpu["learned"]["compute"].startswith("learned from instance #")
    assert data["computed_total"] == data["total"] - (figure["value"] - figure["computed"])


def test_the_api_answer_without_measurements_learns_nothing(viewer_client, tiny_model):
    body = {"path": str(tiny_model)}
    data = viewer_client.post("/api/v1/estimate", json.dumps(body), "application/json").json()
    assert data["learned"] == [] and data["computed_total"] == data["total"]
    assert data["devices"][0]["learned"] == {}


def _query() -> dict[str, object]:
    return {
        "n_ctx": 2048, "n_parallel": 1, "n_batch": 2048, "n_ubatch": 512,
        "cache_type_k": "f16", "cache_type_v": "f16", "n_gpu_layers": -1, "mmap": "on",
        "margin_mib": 0,
    }  # fmt: skip


def test_settings_survive_being_stored(tiny_model):
    settings = replace(RunSettings(n_ctx=2048, tensor_split=(3.0, 1.0)), flash_attn=True)
    assert learning.settings_from(json.loads(json.dumps(learning.settings_data(settings)))) == (
        settings
    )


def test_a_later_instance_replaces_the_buffers_and_keeps_the_nvml_peak(tiny_model):
    settings = RunSettings(n_ctx=2048)
    gpus = [GpuDevice("CUDA0", 1 << 40)]
    first = measure(tiny_model, settings, "NVIDIA L4", gpus)
    learning.record_nvml(first.pk, {"CUDA0": 2 * GIB})
    second = measure(tiny_model, settings, "NVIDIA L4", gpus, compute=1.2)
    (row,) = MemoryMeasurement.objects.all()
    assert row.instance_id == second.instance_id != first.instance_id
    assert row.buffers == second.buffers and row.nvml == {"CUDA0": 2 * GIB}


def test_each_measurement_is_estimated_again_once_not_on_every_load(tiny_model, monkeypatch):
    settings = RunSettings(n_ctx=2048)
    measure(tiny_model, settings, compute=1.5)
    facts = load_model_facts(tiny_model)
    calls = []
    real = learning.estimate
    monkeypatch.setattr(learning, "estimate", lambda *a, **k: calls.append(1) or real(*a, **k))
    first, again = learning.load(facts), learning.load(facts)
    assert len(calls) == 1 and first.factors == again.factors and first.factors
    measure(tiny_model, settings, compute=2.0)  # the same keys measured anew
    calls.clear()
    assert learning.load(facts).factors != first.factors and len(calls) == 1
