"""Measured memory teaches placement: an instance reaching running stores the buffers its
log names (NVML's per-process peak while it runs), placement's figures for the same file
learn from them, and the placement reasons and the deployment page say so. A log without
the figures loses nothing and fails nothing."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest

from core.units import MIB
from inventory.models import Gpu
from models_app import learning
from models_app.choices import DownloadState, SourceKind
from models_app.estimator import GpuDevice, estimate, prepare
from models_app.gguf import ModelFacts, load_model_facts
from models_app.models import MemoryMeasurement
from scheduling import (
    actions,
    backend,
    backend_logs,
    fleet,
    lifecycle,
    measuring,
    placement_pass,
    supervisor,
    tasks,
)
from scheduling.choices import InstanceState
from scheduling.models import Instance, InstanceRun
from scheduling.presenters import estimate_notes
from tests.factories import CatalogModelFactory, ModelFileFactory, NodeFactory
from tests.models_app.learning_helpers import buffers_of, load_log
from tests.scheduling.conftest import tiny_model_file

pytestmark = pytest.mark.django_db

PID = 4242


@pytest.fixture
def placed(fleet, model_7b, queued, django_capture_on_commit_callbacks) -> Instance:
    """One instance of the 7B model placed (its file is on both nodes), starting."""
    for node in (fleet["a"], fleet["b"]):
        ModelFileFactory(model=model_7b, node=node, state=DownloadState.READY)
    with django_capture_on_commit_callbacks(execute=True):
        deployment = actions.do_create_deployment(model=model_7b, served_name="seven-b")
    instance = deployment.instances.get()
    assert instance.state == InstanceState.SCHEDULED and instance.claims.exists()
    Instance.objects.filter(pk=instance.pk).update(state=InstanceState.STARTING, server_pid=PID)
    instance.refresh_from_db()
    return instance


def computed_for(instance: Instance):
    facts = ModelFacts.from_dict(instance.deployment.model.facts)
    gpus = [
        GpuDevice(f"CUDA{claim.position}", learning.UNLIMITED)
        for claim in instance.claims.order_by("position")
    ]
    return estimate(prepare(facts), measuring.instance_settings(instance), gpus)


def start(instance: Instance, log: str | None, tmp_path: Path, capture) -> bool:
    """The run's log written (None: no log file at all), then marked running."""
    path = tmp_path / f"{instance.pk}.log"
    if log is not None:
        path.write_text(log)
    InstanceRun.objects.create(instance=instance, number=1, node=instance.node, log_path=path)
    with capture(execute=True):
        return lifecycle.do_mark_running(instance, backend_logs.measured_memory(log or ""))


def start_with_computed_buffers(
    instance: Instance, tmp_path: Path, capture, **scale: float
) -> bool:
    """``start`` with a log naming the buffers computed for it (each component times
    ``scale[component]``)."""
    return start(instance, load_log(buffers_of(computed_for(instance), **scale)), tmp_path, capture)


def gpu_kind(instance: Instance) -> str:
    return instance.claims.select_related("gpu").get().gpu.name


def test_an_instance_reaching_running_records_its_buffers(
    placed, tmp_path, django_capture_on_commit_callbacks
):
    log = load_log(buffers_of(computed_for(placed), compute=1.5))
    assert start(placed, log, tmp_path, django_capture_on_commit_callbacks)
    row = MemoryMeasurement.objects.get()
    assert row.instance_id == placed.pk and row.model_id == placed.deployment.model_id
    assert row.device_kind == gpu_kind(placed)
    assert row.buffers == backend_logs.measured_components(log)
    assert set(row.buffers) == {"CUDA0", "CPU"}
    assert row.settings["n_ctx"] == placed.deployment.n_ctx
    assert row.nvml == {}


def test_nvml_readings_of_a_running_instance_keep_the_highest(
    placed, tmp_path, django_capture_on_commit_callbacks
):
    start_with_computed_buffers(placed, tmp_path, django_capture_on_commit_callbacks)
    gpu = placed.claims.get().gpu
    for used in (3000 * MIB, 9000 * MIB, 8000 * MIB):
        Gpu.objects.filter(pk=gpu.pk).update(processes=[{"pid": PID, "memory_used": used}])
        supervisor.refresh_measurements(placed.node)
    assert MemoryMeasurement.objects.get().nvml == {"CUDA0": 9000 * MIB}


def test_nvml_readings_still_count_once_a_later_instance_took_the_measurement_over(
    placed, tmp_path, django_capture_on_commit_callbacks
):
    start_with_computed_buffers(placed, tmp_path, django_capture_on_commit_callbacks)
    row = MemoryMeasurement.objects.get()
    placed.refresh_from_db()
    assert placed.measurement_id == row.pk
    # a second replica with the same file, settings and GPU kind recorded since
    MemoryMeasurement.objects.filter(pk=row.pk).update(instance_id=uuid.uuid4())
    gpu = placed.claims.get().gpu
    Gpu.objects.filter(pk=gpu.pk).update(processes=[{"pid": PID, "memory_used": 9000 * MIB}])
    supervisor.refresh_measurements(placed.node)
    assert MemoryMeasurement.objects.get().nvml == {"CUDA0": 9000 * MIB}


@pytest.mark.parametrize(
    "log",
    [None, "", "llama-server: error loading model\n", "load_tensors: CUDA0 model buffer size = x"],
    ids=["no-log-file", "empty", "no-figures", "garbled"],
)
def test_a_log_without_the_figures_runs_and_records_nothing(
    placed, tmp_path, django_capture_on_commit_callbacks, log
):
    assert start(placed, log, tmp_path, django_capture_on_commit_callbacks)
    placed.refresh_from_db()
    assert placed.state == InstanceState.RUNNING
    assert not MemoryMeasurement.objects.exists()


def test_a_log_cut_short_keeps_the_earlier_measurement(
    placed, tmp_path, django_capture_on_commit_callbacks
):
    buffers = buffers_of(computed_for(placed))
    MemoryMeasurement.objects.create(
        model_key="other", settings_key="s", device_kind="cpu", buffers=buffers
    )
    weights_only = "\n".join(
        line for line in load_log(buffers).splitlines() if "model buffer" in line
    )
    assert start(placed, weights_only, tmp_path, django_capture_on_commit_callbacks)
    assert list(MemoryMeasurement.objects.values_list("model_key", flat=True)) == ["other"]


def test_placement_learns_from_the_measurement_and_says_so(
    placed, tmp_path, django_capture_on_commit_callbacks
):
    start_with_computed_buffers(placed, tmp_path, django_capture_on_commit_callbacks, compute=1.5)
    deployment = placed.deployment
    sizer = fleet.sizer_for(deployment)
    plain = fleet.sizer_for(deployment)
    plain.learning = None
    assert sizer.single_gpu_need() > plain.single_gpu_need()
    short = str(placed.pk)[:8]
    assert f"compute learned from instance #{short} on " in sizer.learned_note
    assert "(measured)" in sizer.learned_note
    notes = estimate_notes(deployment)
    assert any(f"measured by instance #{short}" in note for note in notes)


def test_a_refused_instance_says_its_figures_were_learned(
    placed, tmp_path, django_capture_on_commit_callbacks
):
    start_with_computed_buffers(placed, tmp_path, django_capture_on_commit_callbacks, compute=1.5)
    Gpu.objects.update(memory_used=79 * 1024**3)  # no room anywhere
    Instance.objects.create(deployment=placed.deployment, state=InstanceState.PENDING)
    placement_pass.do_place_pending()
    refused = Instance.objects.get(deployment=placed.deployment, state=InstanceState.PENDING)
    assert refused.reason.startswith("No room for it: ")
    assert f"memory: compute learned from instance #{str(placed.pk)[:8]} on " in refused.reason


def test_the_log_is_read_per_device_and_component_adding_up_to_the_device_totals():
    from tests.scheduling.test_backend import CUDA_LOG

    parts = backend_logs.measured_components(CUDA_LOG)
    assert parts["CUDA0"] == {
        "weights": round(2200.52 * MIB),
        "kv_cache": round(544.00 * MIB),
        "compute": round(560.01 * MIB),
        "output": 0,
    }
    assert parts["CPU"]["output"] == round(0.49 * MIB)  # CUDA_Host is host memory
    totals = {device: sum(values.values()) for device, values in parts.items()}
    assert totals == backend_logs.measured_memory(CUDA_LOG)
    assert backend_logs.measured_components("no buffers here") == {}


def test_learning_that_fails_leaves_placement_the_computed_figures(
    placed, tmp_path, django_capture_on_commit_callbacks
):
    class Broken:
        def __bool__(self) -> bool:
            return True

        def apply(self, result, settings):
            raise ValueError("bad measurement")

    sizer = fleet.sizer_for(placed.deployment)
    plain = fleet.sizer_for(placed.deployment)
    sizer.learning = Broken()  # type: ignore[assignment]
    assert sizer.single_gpu_need() == plain.single_gpu_need()
    assert sizer.learned_note == ""


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama.cpp")
def test_a_real_cpu_backend_records_what_its_log_names(
    tmp_path, settings, queued, django_capture_on_commit_callbacks
):
    settings.GPUFLEET_LOG_DIR = tmp_path / "backends"
    node = NodeFactory(name="node-cpu", disk_free={str(tmp_path): 100 * 1024**3})
    path = tiny_model_file(tmp_path)
    model = CatalogModelFactory(
        display_name="tiny", source_kind=SourceKind.PATH, path=str(path), path_node=node,
        hf_repo="", hf_filename="", files=[], facts=load_model_facts(path).to_dict(),
        context_length=2048, size_bytes=path.stat().st_size,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        deployment = actions.do_create_deployment(
            model=model, served_name="tiny-cpu", n_ctx=512, allow_cpu_offload=True
        )
    instance = deployment.instances.get()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert tasks.start_instance(str(instance.pk)).startswith("running")
    finally:
        instance.refresh_from_db()
        backend.stop(instance.pid or 0, instance.server_pid or 0, instance_id=str(instance.pk))
    row = MemoryMeasurement.objects.get()
    assert row.device_kind == "cpu" and set(row.buffers) == {"CPU"}
    assert row.buffers["CPU"]["weights"] > 0 and row.buffers["CPU"]["compute"] > 0
    # the estimator matches llama.cpp on the CPU: learning the same load changes nothing
    instance.refresh_from_db()
    facts = ModelFacts.from_dict(model.facts)
    result = estimate(prepare(facts), measuring.instance_settings(instance), [])
    taught, figures = learning.load(facts).apply(result, measuring.instance_settings(instance))
    assert figures == () and taught is result
