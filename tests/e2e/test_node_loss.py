"""Three simulated nodes on PostgreSQL + Redis, each with its own agent, qcluster and
llama-server backends; a deployment of 3 replicas. Killing one node (kill -9 of its
agent, worker and backends) gets its replicas replaced on the other nodes within
heartbeat timeout + GPUFLEET_FAILOVER_AFTER + 30 s plus the model's download and load;
bringing it back leaves exactly 3 replicas. Killing the housekeeper's agent hands the
fleet-wide passes to another agent within 10 s."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduling import backend
from tests.e2e.stack import PYTHON, Stack
from tests.gateway.stacks import cluster_services, wait
from tests.gguf.http_server import serve_files

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
NODES = ("loss-a", "loss-b", "loss-c")
HEARTBEAT_TIMEOUT, FAILOVER_AFTER = 5, 10

SETUP = """
from models_app.catalog import add_url_model
from scheduling import actions
model = add_url_model({url!r})
actions.do_create_deployment(model=model, served_name="trio", n_ctx=256, replicas=3)
"""
STATES = """
import json
from scheduling.models import Instance
rows = Instance.objects.filter(deployment__served_name="trio").values_list(
    "id", "state", "node__name", "reason")
print(json.dumps([[str(i), s, n, r] for i, s, n, r in rows]))
"""
HOLDER = "SELECT holder FROM inventory_lease WHERE name = 'housekeeper' AND expires_at >= now()"


def _node_env(state: Path, node: str, number: int) -> dict[str, str]:
    first = 39100 + number * 100  # nodes share this machine: ports of their own
    return {
        "GPUFLEET_NODE_NAME": node,
        "Q_CLUSTER_NAME": node,
        "GPUFLEET_STORAGE_ROOTS": str(state / f"models-{node}"),
        "GPUFLEET_BACKEND_PORTS": f"{first}-{first + 99}",
        "GPUFLEET_SIMULATED_GPUS": "1xL4",
        "GPUFLEET_DB_CONN_MAX_AGE": "60",
    }


def start_node(stack: Stack, node: str) -> None:
    env = _node_env(stack.state_dir, node, NODES.index(node))
    stack.start(f"agent-{node}", PYTHON, "manage.py", "agent", **env)
    stack.start(f"worker-{node}", PYTHON, "manage.py", "qcluster", **env)


def kill_node(stack: Stack, node: str) -> None:
    """kill -9 of the node's agent, worker (whole process groups) and backends."""
    for name in (f"agent-{node}", f"worker-{node}"):
        proc = stack.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for found in backend.find_backends():
        if found.node == node:
            os.kill(found.pid, signal.SIGKILL)


def instances(stack: Stack) -> list[list[str]]:
    return json.loads(stack.manage("shell", "-c", STATES).strip().splitlines()[-1])


def running_on(stack: Stack) -> list[str]:
    return sorted(node for _, state, node, _ in instances(stack) if state == "running")


def holder(stack: Stack) -> str:
    """The housekeeper lease's holder ("node:pid:tag"), read straight from PostgreSQL
    (a manage.py shell takes seconds to start on this machine)."""
    import psycopg

    with psycopg.connect(stack.env["DATABASE_URL"], connect_timeout=5) as conn:
        row = conn.execute(HOLDER).fetchone()
    return str(row[0]) if row else "-"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    files = tmp_path / "files"
    files.mkdir()
    from gguf import GGMLQuantizationType as Q

    from devtools.tiny_gguf import write_tiny_model

    write_tiny_model(files / "tiny.gguf", n_layer=2, n_embd=64, n_head=4, n_head_kv=2,
                     n_ff=128, n_ctx_train=2048, weight_type=Q.Q8_0)  # fmt: skip
    with cluster_services() as services, serve_files(files) as (base, _):
        stack = Stack(
            tmp_path / "state", **services, GPUFLEET_FETCH_ALLOW="127.0.0.1",
            GPUFLEET_HEARTBEAT_TIMEOUT=f"{HEARTBEAT_TIMEOUT}s",
            GPUFLEET_FAILOVER_AFTER=f"{FAILOVER_AFTER}s",
        )  # fmt: skip
        (tmp_path / "state").mkdir()
        try:
            stack.manage("migrate", "--noinput", "-v0")
            for node in NODES:
                start_node(stack, node)
            yield stack, f"{base}/files/tiny.gguf"
        finally:
            stack.stop_all()
            for found in backend.find_backends():
                if found.node in NODES:
                    backend.stop(found.pid, found.pid, timeout=5)


def test_a_lost_node_is_replaced_and_its_return_leaves_exactly_the_replicas(fleet):
    stack, url = fleet
    nodes_up = "from inventory.models import Node; print(Node.objects.count())"
    wait(lambda: stack.manage("shell", "-c", nodes_up).strip().endswith("3"), 90, "3 nodes")
    stack.manage("shell", "-c", SETUP.format(url=url))
    wait(lambda: len(running_on(stack)) == 3, 300, "3 replicas run")

    victim = running_on(stack)[0]
    kill_node(stack, victim)
    killed = time.monotonic()
    limit = HEARTBEAT_TIMEOUT + FAILOVER_AFTER + 30 + 60  # + download and load
    wait(lambda: len([n for n in running_on(stack) if n != victim]) == 3, limit,
         f"replacements of {victim}'s replicas run elsewhere")  # fmt: skip
    replaced_in = time.monotonic() - killed
    print(f"replicas of {victim} replaced and running in {replaced_in:.1f} s")

    start_node(stack, victim)
    back = 'from inventory.models import Node; print(Node.objects.get(name="%s").status)'
    wait(lambda: stack.manage("shell", "-c", back % victim).strip().endswith("online"), 60,
         f"{victim} is back online")  # fmt: skip
    settled = {"running", "stopped", "failed"}
    wait(lambda: all(row[1] in settled for row in instances(stack)), 120, "all settle")
    time.sleep(5)  # a few more passes: nothing else starts
    rows = instances(stack)
    assert len([row for row in rows if row[1] == "running"]) == 3, rows
    assert not [row for row in rows if row[1] not in settled], rows


def test_another_agent_takes_the_housekeeper_role_within_10_s(fleet):
    stack, _ = fleet
    wait(lambda: holder(stack) != "-", 60, "a housekeeper is elected")
    first = holder(stack)
    node = first.split(":")[0]
    proc = stack.procs.pop(f"agent-{node}")
    os.killpg(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait(lambda: holder(stack) not in ("-", first), 10 + 5, "another agent takes over")
    took = time.monotonic() - killed
    assert holder(stack).split(":")[0] != node
    assert took <= 10, f"took over after {took:.1f} s"
    print(f"housekeeper {node} killed; {holder(stack)} took over in {took:.1f} s")
