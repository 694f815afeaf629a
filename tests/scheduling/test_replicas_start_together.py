"""Eight replicas of one deployment started at once on one node by a qcluster of eight
workers all reach ``running``, each on its own port, each port served by its own
backend; stopping the deployment leaves no backend process behind. Real processes (an
agent, a qcluster, llama_cpp.server backends), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scheduling import backend, ports
from tests.conftest import skip_or_fail
from tests.e2e.stack import PYTHON, Stack

REPLICAS = 8
NODE = f"node-ports-{uuid.uuid4().hex[:6]}"

SETUP = """
from pathlib import Path
from gguf import GGMLQuantizationType as Q
from inventory.models import Node
from models_app.catalog import add_path_model
from devtools.tiny_gguf import write_tiny_model
from scheduling import actions
node = Node.objects.get(name={node!r})
root = Path({root!r}); root.mkdir(parents=True, exist_ok=True)
(path,) = write_tiny_model(root / "tiny.gguf", header_only=False, n_layer=2, n_embd=64,
    n_head=4, n_head_kv=2, n_ff=128, n_ctx_train=2048, weight_type=Q.Q8_0)
model = add_path_model(node, str(path))
actions.do_create_deployment(model=model, served_name="eight", n_ctx=256, replicas={replicas})
"""

STATES = """
import json
from scheduling.models import Instance
rows = Instance.objects.filter(deployment__served_name="eight").values_list(
    "id", "state", "port", "server_pid", "reason")
print(json.dumps([[str(i), s, p, pid, r] for i, s, p, pid, r in rows]))
"""

STOP = """
from scheduling import actions
from scheduling.models import Deployment
actions.do_set_desired(Deployment.objects.get(served_name="eight"), "stopped")
"""


def _postgres_url() -> str:
    import psycopg

    base = os.environ.get(
        "GPUFLEET_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/gpufleet"
    )
    name = f"gpufleet_ports_{uuid.uuid4().hex[:8]}"
    maintenance = urlsplit(base)._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        skip_or_fail(f"PostgreSQL not reachable: {exc}")
    return urlsplit(base)._replace(path=f"/{name}").geturl()


def _drop(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    maintenance = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.embedded),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def stack(request, tmp_path: Path) -> Iterator[Stack]:
    env = {
        "GPUFLEET_NODE_NAME": NODE,
        "Q_CLUSTER_NAME": NODE,  # the settings set it only where it is not set yet
        "GPUFLEET_WORKERS": str(REPLICAS),
        "GPUFLEET_SIMULATED_GPUS": "1xA100-80GB",
        "GPUFLEET_BACKEND_PORTS": "39800-39899",
    }
    database = _postgres_url() if request.param == "postgres" else ""
    if database:
        env["DATABASE_URL"] = database
    stack = Stack(tmp_path / "state", **env)
    (tmp_path / "state").mkdir()
    try:
        stack.manage("migrate", "--noinput")
        yield stack
    finally:
        stack.stop_all()
        for found in backend.find_backends():
            if found.node == NODE:
                backend.stop(found.pid, found.pid, timeout=5)
        if database:
            _drop(database)


def _instances(stack: Stack) -> list[list]:
    return json.loads(stack.manage("shell", "-c", STATES).strip().splitlines()[-1])


def _wait(stack: Stack, done, timeout: float) -> list[list]:
    deadline = time.monotonic() + timeout
    rows = _instances(stack)
    while not done(rows) and time.monotonic() < deadline:
        time.sleep(1)
        rows = _instances(stack)
    return rows


def test_eight_replicas_started_at_once_on_one_node_all_run(stack: Stack, tmp_path: Path):
    stack.start("agent", PYTHON, "manage.py", "agent")
    stack.start("worker", PYTHON, "manage.py", "qcluster")
    deadline = time.monotonic() + 60
    while "registered" not in (out := stack.manage("shell", "-c", _node_check())):
        assert time.monotonic() < deadline, f"the agent did not register the node: {out}"
        time.sleep(0.5)
    stack.manage("shell", "-c", SETUP.format(node=NODE, root=str(tmp_path / "state" / "models"),
                                            replicas=REPLICAS))  # fmt: skip

    rows = _wait(stack, lambda rows: all(r[1] == "running" for r in rows), timeout=240)
    assert [r[1] for r in rows] == ["running"] * REPLICAS, rows
    assert len({r[2] for r in rows}) == REPLICAS, f"one port each: {rows}"
    for _, _, port, server_pid, _ in rows:
        assert ports.listens_on(server_pid, port), f"pid {server_pid} serves port {port}"

    stack.manage("shell", "-c", STOP)
    rows = _wait(stack, lambda rows: all(r[1] == "stopped" for r in rows), timeout=90)
    assert [r[1] for r in rows] == ["stopped"] * REPLICAS, rows
    ids = {r[0] for r in rows}
    assert not [f for f in backend.find_backends() if f.instance_id in ids], "nothing left running"


def _node_check() -> str:
    return (
        "from inventory.models import Node; "
        f"print('registered' if Node.objects.filter(name={NODE!r}).exists() else 'not yet')"
    )
