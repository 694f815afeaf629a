"""End to end with real llama.cpp backends on the CPU, on a simulated GPU fleet: deploy →
running → a completion through the backend's port; kill -9 → failed → restarted; an
agent that restarts adopts the backends that still run and stops those it does not
know. The test plays the node's worker (``tasks.start_instance``) and its agent
(``Supervisor.tick``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.units import GIB
from models_app.choices import SourceKind
from models_app.gguf import load_model_facts
from scheduling import actions, backend, lifecycle, placement_pass, ports, tasks
from scheduling.choices import InstanceState
from scheduling.models import Deployment, Instance
from scheduling.supervisor import Supervisor
from tests.conftest import skip_or_fail
from tests.factories import CatalogModelFactory, GpuFactory, NodeFactory
from tests.scheduling.conftest import tiny_model_file

pytestmark = pytest.mark.django_db
S = InstanceState


def _wait_for(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s")


@pytest.fixture
def node(tmp_path: Path, settings):
    settings.GPUFLEET_LOG_DIR = tmp_path / "backends"
    settings.GPUFLEET_RESTART_BACKOFF = 0.05
    settings.GPUFLEET_BACKEND_START_TIMEOUT = 60.0
    node = NodeFactory(name="node-e2e", disk_free={str(tmp_path): 100 * GIB})
    GpuFactory(node=node, index=0, memory_total=24 * GIB, memory_used=GIB // 2)
    return node


@pytest.fixture
def deployment(node, tmp_path: Path, queued, django_capture_on_commit_callbacks):
    path = tiny_model_file(tmp_path)
    model = CatalogModelFactory(
        display_name="tiny", source_kind=SourceKind.PATH, path=str(path), path_node=node,
        hf_repo="", hf_filename="", files=[], facts=load_model_facts(path).to_dict(),
        context_length=2048, size_bytes=path.stat().st_size,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        created = actions.do_create_deployment(model=model, served_name="tiny-chat", n_ctx=512)
    yield created
    for instance in Instance.objects.filter(deployment=created):
        if instance.pid or instance.server_pid:
            pids = (instance.pid or 0, instance.server_pid or 0)
            backend.stop(*pids, timeout=5, instance_id=str(instance.pk))


STRAY = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def strays(tmp_path: Path) -> Iterator[dict[str, backend.Launched]]:
    """Backends of an instance gpufleet does not know: one marked as this node's, one as
    another node's on the same machine."""
    (tmp_path / "stray").mkdir()
    model = tiny_model_file(tmp_path / "stray")
    launched: dict[str, backend.Launched] = {}
    taken: set[int] = set()
    for node_name in ("node-e2e", "node-other"):
        port = ports.free_port(39500, 39600, taken) or 39599
        taken.add(port)
        spec = backend.LaunchSpec(
            instance_id=STRAY, model_path=model, port=port, n_ctx=256, node_name=node_name,
            log_path=tmp_path / f"{node_name}.log", state_dir=tmp_path / f"{node_name}-state",
        )  # fmt: skip
        launched[node_name] = backend.launch(spec)
    yield launched
    for process in launched.values():
        backend.stop(process.runner_pid, process.server_pid, timeout=5)


def _start(instance: Instance) -> Instance:
    result = tasks.start_instance(str(instance.pk))
    assert result.startswith("running"), result
    instance.refresh_from_db()
    return instance


def _complete(port: int) -> str:
    body = {"model": "tiny-chat", "prompt": "hello", "max_tokens": 4, "temperature": 0}
    response = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=60)
    response.raise_for_status()
    return response.json()["choices"][0]["text"]


def test_a_deployment_runs_and_answers_a_completion_through_its_port(deployment, queued):
    instance = deployment.instances.get()
    assert instance.state == S.SCHEDULED
    assert queued[-1] == (lifecycle.START_TASK, (str(instance.pk),), "node-e2e")
    instance = _start(instance)
    assert instance.state == S.RUNNING
    assert isinstance(_complete(instance.port), str)
    assert instance.measured["CPU"] > 0, "llama.cpp's reported buffers are stored"
    models = httpx.get(f"http://127.0.0.1:{instance.port}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["tiny-chat"]
    run = instance.current_run
    assert run.ready_at is not None and Path(run.log_path).is_file()


def test_the_agent_keeps_the_readings_of_a_running_llama_server(deployment, node):
    instance = _start(deployment.instances.get())
    if instance.backend != "llama_server":
        skip_or_fail("llama-server is not built: the backend fell back to llama-cpp-python")
    _complete(instance.port)
    Supervisor(node).tick(node, housekeeper=False)
    instance.refresh_from_db()
    readings = instance.readings
    assert (readings["slots"], readings["busy"], readings["deferred"]) == (1, 0, 0)
    assert readings["tokens_total"] >= 1 and readings["prompt_tokens_total"] >= 1
    assert 0 < readings["kv_used"] <= 1 and readings["tokens_per_second"] is None


def test_a_backend_killed_with_sigkill_fails_and_is_restarted(
    deployment, node, django_capture_on_commit_callbacks
):
    instance = _start(deployment.instances.get())
    supervisor = Supervisor(node)
    supervisor.tick(node)
    os.kill(instance.server_pid, signal.SIGKILL)
    _wait_for(lambda: backend.read_exit(tasks.state_dir(instance, instance.current_run)))
    supervisor.tick(node)
    instance.refresh_from_db()
    assert instance.state == S.FAILED
    assert "SIGKILL" in instance.last_error
    assert not instance.claims.exists(), "a dead backend's claim is released"
    first = instance.runs.get(number=1)
    assert first.exit_signal == "SIGKILL" and first.ended_at is not None
    time.sleep(0.1)  # the backoff (0.05 s)
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.do_requeue_failed()
        placement_pass.do_place_pending()
    instance = _start(Instance.objects.get(pk=instance.pk))
    assert instance.restart_count == 1 and instance.runs.count() == 2
    assert isinstance(_complete(instance.port), str)


def test_a_restarted_agent_adopts_running_backends_and_stops_unknown_ones(deployment, node, strays):
    instance = _start(deployment.instances.get())
    Instance.objects.filter(pk=instance.pk).update(state=S.UNREACHABLE)  # the node was lost
    Supervisor(node).tick(node)  # a new agent: adopts on its first tick
    instance.refresh_from_db()
    assert instance.state == S.RUNNING
    assert backend.is_running(instance.server_pid, str(instance.pk))
    assert isinstance(_complete(instance.port), str)
    _wait_for(lambda: not backend.is_running(strays["node-e2e"].server_pid, STRAY))
    assert backend.is_running(strays["node-other"].server_pid, STRAY), "not this agent's"


def test_stopping_a_running_deployment_stops_its_backend(
    deployment, node, queued, django_capture_on_commit_callbacks
):
    instance = _start(deployment.instances.get())
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_set_desired(deployment, "stopped")
    instance.refresh_from_db()
    assert instance.state == S.STOPPING
    assert queued[-1] == (lifecycle.STOP_TASK, (str(instance.pk),), "node-e2e")
    pid = instance.server_pid
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.stop_instance(str(instance.pk)) == "stopped"
    instance.refresh_from_db()
    assert instance.state == S.STOPPED and not instance.claims.exists()
    assert not backend.is_running(pid, str(instance.pk))
    assert Deployment.objects.filter(pk=deployment.pk).exists()


def test_a_backend_that_no_instance_accounts_for_is_stopped_by_the_next_sweep(deployment, node):
    instance = _start(deployment.instances.get())
    supervisor = Supervisor(node)
    supervisor.tick(node, now=0.0)  # adopts it: it is ours and running
    assert backend.is_running(instance.server_pid, str(instance.pk))
    Instance.objects.filter(pk=instance.pk).update(state=S.STOPPED, pid=None, server_pid=None)
    supervisor.tick(node, now=1.0)  # not due yet
    assert backend.is_running(instance.server_pid, str(instance.pk))
    supervisor.tick(node, now=1.0 + 10.0)
    _wait_for(lambda: not backend.is_running(instance.server_pid, str(instance.pk)), 15)
