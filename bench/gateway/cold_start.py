"""Cold start through the gateway: first request to first token for a scale-to-zero
deployment on a node that holds the file, minus the backend's own start time.

    .venv/bin/python bench/gateway/cold_start.py [--starts 5]

A throw-away embedded stack (SQLite): the web process (``/v1``), an agent and a qcluster
of one simulated node, and a tiny generated llama model (2 layers) deployed with
``min_replicas=0`` and a 1 s idle timeout. Each start: wait until no instance is left,
send one streaming completion, time it to the first content chunk; then read the run's
phases (placement, queue, spawn, load) that the scheduler recorded. The backend's own
start time is the ``load`` phase (its pids recorded → it answered ``/v1/models``: the
Python server's imports and the model load). What the gateway and the scheduler add is
first token − load. Target: under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.e2e.stack import PYTHON, Stack  # noqa: E402
from tests.gateway.stacks import stop_backends  # noqa: E402

NODE = f"bench-cold-{uuid.uuid4().hex[:6]}"
SETUP = """
import json
from pathlib import Path
from gguf import GGMLQuantizationType as Q
from inventory.models import Node
from models_app.catalog import add_path_model
from devtools.tiny_gguf import write_tiny_model
from scheduling import actions
from gateway.models import InferenceKey
node = Node.objects.get(name={node!r})
root = Path({root!r}); root.mkdir(parents=True, exist_ok=True)
(path,) = write_tiny_model(root / "tiny.gguf", header_only=False, n_layer=2, n_embd=64,
    n_head=4, n_head_kv=2, n_ff=128, n_ctx_train=2048, weight_type=Q.Q8_0)
model = add_path_model(node, str(path))
actions.do_create_deployment(model=model, served_name="cold", n_ctx=512, replicas=1,
    min_replicas=0, idle_timeout=1)
print(json.dumps({{"key": InferenceKey.issue("bench")[1]}}))
"""
LIVE = """
from scheduling.models import Instance
print(Instance.objects.filter(deployment__served_name="cold").exclude(state="stopped").count())
"""
PHASES = """
import json
from scheduling.models import InstanceRun
run = InstanceRun.objects.filter(instance__deployment__served_name="cold",
    ready_at__isnull=False).order_by("-ready_at").first()
print(json.dumps(run.phases))
"""


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def first_token(url: str, key: str) -> float:
    body = {"model": "cold", "prompt": "hello", "max_tokens": 4, "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    started = time.perf_counter()
    with httpx.stream(
        "POST", url + "/v1/completions", json=body, headers=headers, timeout=120
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                return time.perf_counter() - started
    raise RuntimeError("no token came")


def wait_for_zero(stack: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while last_line(stack.manage("shell", "-c", LIVE)) != "0":
        if time.monotonic() > deadline:
            raise TimeoutError("the idle instance was not released")
        time.sleep(0.5)
    time.sleep(1.0)  # let the agent's stop finish and the machine settle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    state = Path(f"/tmp/gpufleet-bench-cold-{uuid.uuid4().hex[:6]}")
    state.mkdir()
    stack = Stack(state, GPUFLEET_NODE_NAME=NODE, Q_CLUSTER_NAME=NODE,
                  GPUFLEET_SIMULATED_GPUS="1xL4", GPUFLEET_LOG_LEVEL="WARNING")  # fmt: skip
    rows = []
    try:
        stack.manage("migrate", "--noinput", "-v0")
        stack.start("agent", PYTHON, "manage.py", "agent")
        stack.start("worker", PYTHON, "manage.py", "qcluster")
        stack.start_web()
        nodes = "from inventory.models import Node; print(list(Node.objects.values_list('name')))"
        while NODE not in stack.manage("shell", "-c", nodes):
            time.sleep(0.5)
        key = json.loads(last_line(stack.manage(
            "shell", "-c", SETUP.format(node=NODE, root=str(state / "models"))
        )))["key"]  # fmt: skip
        for number in range(1, args.starts + 1):
            wait_for_zero(stack)
            ttft = first_token(stack.url, key)
            phases = json.loads(last_line(stack.manage("shell", "-c", PHASES)))
            overhead = ttft - phases["load"]
            rows.append({"ttft": ttft, "phases": phases, "overhead": overhead})
            print(f"start {number}: first token {ttft * 1000:.0f} ms, load "
                  f"{phases['load'] * 1000:.0f} ms, added {overhead * 1000:.0f} ms, "
                  f"phases {phases}")  # fmt: skip
    finally:
        stack.stop_all()
        stop_backends(NODE)  # backends outlive gpufleet's processes by design
    added = statistics.median(r["overhead"] for r in rows) * 1000
    ttft = statistics.median(r["ttft"] for r in rows) * 1000
    print(f"\nmedian of {len(rows)}: first token {ttft:.0f} ms, added by gpufleet {added:.0f} ms "
          f"(target < 200 ms: {'met' if added < 200 else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
