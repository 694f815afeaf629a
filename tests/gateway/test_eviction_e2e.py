"""Two scale-to-zero deployments that cannot both fit on one simulated GPU take turns:
the higher-priority one evicts the idle lower-priority one, never a busy one; the lower
one comes back once the higher one was released as idle. Real processes and backends."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.stack import Stack
from tests.gateway.stacks import MODES, node_stack
from tests.gateway.test_openai_client import _client, _wait

NODE = f"node-ev-{uuid.uuid4().hex[:6]}"

SETUP = """
import json
from pathlib import Path
from gguf import GGMLQuantizationType as Q
from inventory.models import Gpu, Node
from models_app.catalog import add_path_model
from devtools.tiny_gguf import write_tiny_model
from scheduling import actions
from scheduling.models import Deployment
from gateway.models import InferenceKey
node = Node.objects.get(name={node!r})
root = Path({root!r}); root.mkdir(parents=True, exist_ok=True)
(path,) = write_tiny_model(root / "tiny.gguf", header_only=False, n_layer=2, n_embd=64,
    n_head=4, n_head_kv=2, n_ff=128, n_ctx_train=2048, weight_type=Q.Q8_0)
model = add_path_model(node, str(path))
common = dict(model=model, n_ctx=512, replicas=1, min_replicas=0, cold_start_timeout=120)
actions.do_create_deployment(served_name="low", priority=10, idle_timeout=600, **common)
actions.do_create_deployment(served_name="high", priority=60, idle_timeout=6, **common)
from scheduling.fleet import sizer_for
low = Deployment.objects.get(served_name="low")
claim = actions.preview(low)["placement"].gpu_bytes[0]
gpu = Gpu.objects.get(node=node, index=0)
_, key = InferenceKey.issue("all")
print(json.dumps({{"key": key, "claim": claim, "need": sizer_for(low).single_gpu_need(),
                   "total": gpu.memory_total, "reserved": gpu.reserved}}))
"""

EVICTIONS = """
from scheduling.models import Eviction
print([e.text for e in Eviction.objects.order_by("at")])
"""

ROWS = """
import json
from scheduling.models import Instance
print(json.dumps({{name: [i.state for i in Instance.objects.filter(
    deployment__served_name=name).exclude(state="stopped")] for name in ("low", "high")}}))
"""


@pytest.fixture(scope="module", params=MODES)
def stack(request, tmp_path_factory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("eviction-stack")
    env = {
        "GPUFLEET_SIMULATED_GPUS": "1xL4", "GPUFLEET_BACKEND_PORTS": "39700-39799",
        "GPUFLEET_EVENT_POLL": "0.1", "GPUFLEET_EVICT_IDLE_AFTER": "3s",
        "GPUFLEET_PLACEMENT_MARGIN": "16MiB",
    }  # fmt: skip
    with node_stack(state, request.param, NODE, **env) as stack:
        out = stack.manage("shell", "-c", SETUP.format(node=NODE, root=str(state / "models")))
        facts = json.loads(out.strip().splitlines()[-1])
        stack.keys = {"every": facts["key"]}  # type: ignore[attr-defined]
        # Someone else's program leaves room for one instance and a half, not two.
        room = facts["need"] + facts["claim"] // 2
        foreign = facts["total"] - facts["reserved"] - (420 + 8) * 1024**2 - room
        (state / "simulated").mkdir(exist_ok=True)
        (state / "simulated" / f"{NODE}.json").write_text(json.dumps({"foreign": {"0": foreign}}))
        time.sleep(3)  # the agent reads the fault file every second
        yield stack


def _states(stack: Stack) -> dict[str, list[str]]:
    return json.loads(stack.manage("shell", "-c", ROWS.format()).strip().splitlines()[-1])


def _ask(stack: Stack, name: str) -> str:
    return _client(stack).completions.create(model=name, prompt="a", max_tokens=2).model


def test_the_higher_priority_deployment_evicts_only_an_idle_lower_one(stack: Stack):
    assert _ask(stack, "low")
    assert _states(stack)["low"] == ["running"]

    busy = threading.Event()

    def keep_low_busy() -> None:
        while not busy.is_set():
            _ask(stack, "low")

    worker = threading.Thread(target=keep_low_busy)
    worker.start()
    try:
        time.sleep(4)  # past the idle threshold: only the traffic keeps it from being idle
        with pytest.raises(openai.InternalServerError, match="No capacity"):
            _ask(stack, "high")
        assert _states(stack)["low"] == ["running"], "a busy instance is never evicted"
    finally:
        busy.set()
        worker.join()

    time.sleep(5)  # now low is idle (3 s without a request, written within 2 s)
    assert _ask(stack, "high")
    states = _states(stack)
    assert states["high"] == ["running"] and states["low"] == []
    lines = stack.manage("shell", "-c", EVICTIONS)
    assert "stopped low (priority 10, idle" in lines and "to start high" in lines

    _wait(lambda: _states(stack)["high"] == [], 60, "high is released when idle")
    assert _ask(stack, "low"), "low takes its turn again"
