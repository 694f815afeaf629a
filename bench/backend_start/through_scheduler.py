"""Start to ready through the whole scheduler, next to starting the server by hand.

gpufleet side, timed from the operator's "start" to the instance being ``running``:
``actions.do_set_desired(deployment, RUNNING)`` (reconcile: a new instance), the
placement pass after commit (the fleet read, the estimate, claims written), the start
task handed over, then ``tasks.start_instance`` in this process as the node's worker
runs it (claim the row, pick a port, launch the detached runner, poll ``/v1/models``,
parse the log, store the measurement). Not included: the queue's own delivery delay
(Django-Q's ORM broker polls every ``Q_CLUSTER["poll"]`` seconds; Redis delivers at
once), printed beside the figures.

By hand: ``subprocess.Popen(python -m llama_cpp.server ...)`` with the same command line
and environment, polling ``/v1/models`` the same way. Runs alternate after one untimed
run of each; each gpufleet run is stopped through ``tasks.stop_instance``.

    .venv/bin/python bench/backend_start/through_scheduler.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from core.units import GIB

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def setup(work: Path) -> Any:
    os.environ["GPUFLEET_STATE_DIR"] = str(work / "state")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return make_deployment(work)


def make_deployment(work: Path) -> Any:
    import gguf

    from devtools.tiny_gguf import write_tiny_model
    from inventory.models import Gpu, Node
    from models_app.gguf import load_model_facts
    from models_app.models import CatalogModel
    from scheduling import actions

    (path,) = write_tiny_model(
        work / "tiny.gguf", n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
        n_ctx_train=2048, weight_type=gguf.GGMLQuantizationType.Q8_0,
    )  # fmt: skip
    node = Node.objects.create(name="bench", ram_total=16 * GIB, ram_available=8 * GIB)
    Gpu.objects.create(node=node, index=0, uuid="GPU-bench-0", name="sim", memory_total=24 * GIB)
    model = CatalogModel.objects.create(
        display_name="tiny", source_kind="path", path=str(path), path_node=node,
        facts=load_model_facts(path).to_dict(), context_length=2048,
    )  # fmt: skip
    return actions.do_create_deployment(model=model, served_name="tiny", n_ctx=256, replicas=1)


def through_scheduler(deployment: Any) -> float:
    from django.db import transaction

    from scheduling import actions, tasks
    from scheduling.choices import DesiredState, InstanceState
    from scheduling.models import Instance

    started = time.perf_counter()
    with mock.patch("django_q.tasks.async_task", return_value="bench"), transaction.atomic():
        actions.do_set_desired(deployment, DesiredState.RUNNING)
    instance = Instance.objects.get(deployment=deployment, state=InstanceState.SCHEDULED)
    result = tasks.start_instance(str(instance.pk))
    elapsed = time.perf_counter() - started
    if not result.startswith("running"):
        raise SystemExit(f"did not start: {result}")
    with mock.patch("django_q.tasks.async_task", return_value="bench"):
        actions.do_set_desired(deployment, DesiredState.STOPPED)
    tasks.stop_instance(str(instance.pk))
    return elapsed


def by_hand(work: Path, run: int) -> float:
    from bench.backend_start.run import by_hand as hand
    from scheduling import backend, ports

    port = ports.free_port(39200, 39400, set())
    assert port is not None
    spec = backend.LaunchSpec(
        instance_id=f"hand-{run}", model_path=work / "tiny.gguf", port=port, n_ctx=256,
        log_path=work / f"hand-{run}.log", state_dir=work / f"hand-{run}",
        served_name="tiny", cuda_visible_devices="GPU-bench-0", n_gpu_layers=-1,
        n_batch=2048, n_ubatch=512,
    )  # fmt: skip
    return hand(spec, 0.05)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-start-"))
    deployment = setup(work)
    from django.conf import settings

    from scheduling import actions
    from scheduling.choices import DesiredState

    with mock.patch("django_q.tasks.async_task", return_value="bench"):
        actions.do_set_desired(deployment, DesiredState.STOPPED)
    through_scheduler(deployment), by_hand(work, 0)  # untimed warm-up of each
    ours: list[float] = []
    hand: list[float] = []
    for run in range(1, args.runs + 1):
        if run % 2:
            hand.append(by_hand(work, run))
            ours.append(through_scheduler(deployment))
        else:
            ours.append(through_scheduler(deployment))
            hand.append(by_hand(work, run))
    report(ours, hand, settings.Q_CLUSTER.get("poll"))


def report(ours: list[float], hand: list[float], poll: float | None) -> None:
    def cell(values: list[float]) -> str:
        ms = [1000 * v for v in values]
        return f"{statistics.median(ms):.0f} ({min(ms):.0f}–{max(ms):.0f})"

    print("| ms, median (min–max) | runs |")
    print("|---|---|")
    print(f"| by hand: Popen(server) → /v1/models 200 | {cell(hand)} |")
    print(f"| gpufleet: start → placement → task → running | {cell(ours)} |")
    overhead = 1000 * (statistics.median(ours) - statistics.median(hand))
    print(f"| **overhead (difference of medians)** | **{overhead:.0f}** |")
    print(
        f"\nruns: {len(ours)} each; not included: the queue's delivery (ORM broker poll {poll} s)"
    )
    print("ours:", " ".join(f"{1000 * v:.0f}" for v in ours))
    print("hand:", " ".join(f"{1000 * v:.0f}" for v in hand))


if __name__ == "__main__":
    main()
