"""Many simulated nodes in one process, for fleets too large for one agent process each.

    python bench/telemetry/feeder.py --first 0 --last 100 --spec 8xA100-80GB --out stats.json

Started by ``run.py`` (``--feeders``) with the benchmark's environment. It registers the
nodes ``<prefix><first>`` … ``<prefix><last - 1>`` (``actions.do_register_node`` with
the simulated probe's devices) and then, once a second per node, the nodes' phases
spread over the second, sends what an agent's tick sends the overview: the simulated
probe's readings as GPU rows (``presenters.gpu_row``, as ``telemetry.record_readings``
builds them) in one ``node.gpus`` event (``events.deliver``: the outbox or Redis). The
events of ticks due within ``SEND_EVERY`` go out in one write (``events.deliver_many``).
The readings are written to the GPU rows every ``WRITE_EVERY`` ticks (what a resync reads)
and a heartbeat every ``HEARTBEAT_EVERY``. Left out: raw samples, alerts, the
supervisor; the agent's full tick costs about 50 ms of CPU per node here, so 200 nodes
at 1 Hz would need some 10 cores for the simulation alone.
A tick that falls behind is not caught up (as ``Agent.run``). On SIGTERM it writes
its tick count, late ticks and CPU time to ``--out``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
HEARTBEAT_EVERY = 5
WRITE_EVERY = 30
LATE = 0.1  # seconds behind its due time: a late tick
SEND_EVERY = 0.05  # seconds: ticks of one moment go out in one write
NODE_PREFIX = "bench-"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--last", type=int, required=True)
    parser.add_argument("--spec", default="8xA100-80GB")
    parser.add_argument("--prefix", default=NODE_PREFIX, help="node names: PREFIX<number>")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds per node tick")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True, help="touched once registered")
    return parser.parse_args(argv)


class Node:
    def __init__(self, name: str, spec: str) -> None:
        from django.conf import settings

        from inventory import actions
        from inventory.probe.simulated import SimulatedProbe

        self.probe = SimulatedProbe(name, spec, settings.STATE_DIR)
        self.node = actions.do_register_node(
            name, "127.0.0.1", self.probe.devices(), self.probe.message
        )
        self.gpus = {gpu.uuid: gpu for gpu in self.node.gpus.with_claims().order_by("index")}
        self.ticks = 0

    def tick(self) -> Any:
        """This node's readings as GPU rows; returns the ``node.gpus`` event to send."""
        from django.utils import timezone

        from core import events
        from inventory.models import Gpu, Node
        from inventory.presenters import gpu_row

        now = timezone.now()
        readings = {reading.uuid: reading for reading in self.probe.read()}
        for gpu in self.gpus.values():
            _apply(gpu, readings.get(gpu.uuid), now)
        rows = [gpu_row(gpu, set()) for gpu in self.gpus.values()]
        if self.ticks % WRITE_EVERY == 0:
            Gpu.objects.bulk_update(list(self.gpus.values()), FIELDS)
        if self.ticks % HEARTBEAT_EVERY == 0:
            Node.objects.filter(pk=self.node.pk).update(last_heartbeat=now)
        self.ticks += 1
        return events.make_event("node.gpus", node_id=str(self.node.pk), rows=rows)


FIELDS = [
    "utilization",
    "memory_used",
    "temperature",
    "power_draw",
    "sampled_at",
    "error",
    "present",
]


def _apply(gpu: Any, reading: Any, now: Any) -> None:
    gpu.present = reading is not None
    if reading is None:
        return
    gpu.sampled_at, gpu.error = now, reading.error
    if reading.ok:
        gpu.utilization, gpu.memory_used = reading.utilization, reading.memory_used
        gpu.temperature, gpu.power_draw = reading.temperature, reading.power_draw


def drive(nodes: list[Node], interval: float, stop: dict[str, bool]) -> dict[str, Any]:
    from django.db import close_old_connections

    from core import events

    start = time.monotonic() + 0.2
    due = [(start + interval * i / len(nodes), i) for i in range(len(nodes))]
    heapq.heapify(due)
    late: list[float] = []
    errors = 0
    pending: list[Any] = []
    sent_at = time.monotonic()
    while not stop["now"]:
        when, i = heapq.heappop(due)
        delay = when - time.monotonic()
        if pending and (delay > 0 or time.monotonic() - sent_at > SEND_EVERY):
            events.deliver_many(pending)  # one write for the ticks of the last moments
            pending, sent_at = [], time.monotonic()
            delay = when - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -LATE:
            late.append(-delay)
        close_old_connections()
        try:
            pending.append(nodes[i].tick())
        except Exception as exc:  # keep going, as Agent.run does
            errors += 1
            print(f"tick of node {i} failed: {exc!r}", file=sys.stderr, flush=True)
        heapq.heappush(due, (max(when + interval, time.monotonic()), i))  # no catch-up burst
    late.sort()
    return {
        "ticks": sum(node.ticks for node in nodes),
        "errors": errors,
        "late_ticks": len(late),
        "late_p95_s": late[int(0.95 * (len(late) - 1))] if late else 0.0,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import django

    django.setup()
    stop = {"now": False}

    def _term(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    nodes = [Node(f"{args.prefix}{i}", args.spec) for i in range(args.first, args.last)]
    args.ready.write_text("ready")
    stats = drive(nodes, args.interval, stop)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    args.out.write_text(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
