"""Ports of a node's backends: reserved atomically before a launch, readiness that proves
the answering server is the launched process, and a launch that fails for any reason
failing its instance at once (claims released, nothing left running)."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Iterator

import pytest

from models_app.choices import DownloadState
from scheduling import actions, backend, lifecycle, ports, tasks
from scheduling.choices import InstanceState
from scheduling.models import Instance
from tests.factories import ModelFileFactory

S = InstanceState
pytestmark = pytest.mark.django_db


@pytest.fixture
def two_starting(fleet, model_7b, queued, django_capture_on_commit_callbacks) -> list[Instance]:
    """Two replicas of one deployment placed on node-a, both taken by a worker to start."""
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    with django_capture_on_commit_callbacks(execute=True):
        deployment = actions.do_create_deployment(
            model=model_7b, served_name="seven-b", n_ctx=4096, replicas=2
        )
    instances = list(deployment.instances.order_by("created_at"))
    assert {i.node_id for i in instances} == {fleet["a"].pk}
    Instance.objects.filter(pk__in=[i.pk for i in instances]).update(state=S.STARTING)
    for instance in instances:
        instance.refresh_from_db()
    return instances


def test_the_second_of_two_workers_picking_one_port_gets_the_next(two_starting):
    first, second = two_starting

    def bindable(port: int) -> bool:
        # The other worker writes the same port between our read and our write.
        if port == 39000 and first.port is None:
            assert lifecycle.do_reserve_port(first, [39000], lambda _: True) == 39000
        return True

    assert lifecycle.do_reserve_port(second, range(39000, 39010), bindable) == 39001
    assert sorted(Instance.objects.values_list("port", flat=True)) == [39000, 39001]


def test_ports_held_by_other_programs_are_skipped(two_starting):
    first, _ = two_starting
    assert lifecycle.do_reserve_port(first, range(39000, 39010), lambda p: p > 39003) == 39004


def test_no_port_left_in_the_range_is_a_clear_error(two_starting):
    first, second = two_starting
    lifecycle.do_reserve_port(first, [39000], lambda _: True)
    with pytest.raises(lifecycle.PortUnavailable, match="no free port"):
        lifecycle.do_reserve_port(second, [39000], lambda _: True)


def test_an_instance_stopped_while_starting_reserves_no_port(two_starting):
    first, _ = two_starting
    Instance.objects.filter(pk=first.pk).update(state=S.STOPPING)
    with pytest.raises(lifecycle.PortUnavailable, match="stopped"):
        lifecycle.do_reserve_port(first, [39000], lambda _: True)
    assert Instance.objects.get(pk=first.pk).port is None


def test_a_launch_that_raises_anything_fails_the_instance_and_releases_its_claims(
    fleet, model_7b, queued, django_capture_on_commit_callbacks, monkeypatch, tmp_path, settings
):
    settings.GPUFLEET_LOG_DIR = tmp_path
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    with django_capture_on_commit_callbacks(execute=True):
        deployment = actions.do_create_deployment(model=model_7b, served_name="x", n_ctx=4096)
    instance = deployment.instances.get()
    assert instance.state == S.SCHEDULED and instance.claims.exists()

    def explode(spec: backend.LaunchSpec) -> backend.Launched:
        raise RuntimeError("database went away")

    monkeypatch.setattr(backend, "launch", explode)
    result = tasks.start_instance(str(instance.pk))
    instance.refresh_from_db()
    assert result.startswith("failed to launch")
    assert instance.state == S.FAILED
    assert "database went away" in instance.last_error
    assert not instance.claims.exists()
    assert instance.port is None and instance.next_attempt_at is not None


class _Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    """A server in this process answering ``/v1/models`` with 200 on a free port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_readiness_ignores_a_server_that_is_not_the_launched_process(impostor):
    launched = subprocess.Popen(["sleep", "30"])  # "our" backend, which never listens
    try:
        ready = backend.wait_ready(
            "127.0.0.1", impostor, 0.5, lambda: launched.poll() is None, server_pid=launched.pid
        )
        assert not ready, "another process answering on the port is not our backend"
    finally:
        launched.kill()
        launched.wait()


def test_readiness_accepts_the_process_that_listens_on_the_port(impostor):
    import os

    assert ports.listens_on(os.getpid(), impostor)
    assert backend.wait_ready("127.0.0.1", impostor, 5, lambda: True, server_pid=os.getpid())
