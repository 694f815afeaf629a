"""Benchmark of placement (scheduling.placement.place) on a large simulated fleet.

The fleet: 1,000 nodes × 8 simulated 80 GiB GPUs (1 GiB reserved each) with 5,000
running instances already claiming memory (2–40 GiB each, packed onto GPUs), 5 %
of the GPUs holding foreign memory, varied host RAM, zones, priorities, replicas
and model copies. No Django, no database: plain data in, one answer out.

It measures, for the real sizer (``EstimatorSizer`` over header-only models
written by ``write_tiny_model``) and for a constant-time fake sizer:

* one placement's p50 / p99 / max wall time, and p50 / p99 CPU time of the process
  (less sensitive to other work on the machine), over a mix of requests
  (``--runs`` of each kind):
  a 7B-class model that fits on one GPU; a 70B-class model that needs several GPUs;
  the same 70B-class model with splitting forbidden, which needs partial CPU offload;
* the real sizer also built afresh for every placement (its one-GPU need is then
  estimated inside the timing);
* 1,000 placements back to back, each one's claims applied to the fleet before
  the next (the kinds in turn): total time.

Run from the repository root::

    .venv/bin/python bench/placement/run.py [--runs 400] [--seed 1] [--json out.json]
        [--back-to-back 1000] [--gc-freeze]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from core.units import GIB, MIB  # noqa: E402
from devtools.tiny_gguf import write_tiny_model  # noqa: E402
from models_app.estimator import RunSettings  # noqa: E402
from models_app.gguf import ModelFacts, PartialFileSource, parse_model  # noqa: E402
from scheduling.placement import (  # noqa: E402
    Fit,
    GpuView,
    NodeView,
    Placement,
    Policy,
    Request,
    Sizer,
    place,
)
from scheduling.placement_sizer import EstimatorSizer  # noqa: E402

N_NODES, GPUS_PER_NODE, GPU_TOTAL, RESERVED = 1_000, 8, 80 * GIB, GIB
N_INSTANCES = 5_000
ZONES = ("eu", "us", "ap")
MODEL_7B = {"n_layer": 32, "n_embd": 4096, "n_head": 32, "n_head_kv": 8, "n_ff": 11008}
MODEL_70B = {"n_layer": 80, "n_embd": 8192, "n_head": 64, "n_head_kv": 8, "n_ff": 28672}
SETTINGS = RunSettings(n_ctx=8192, flash_attn=True)
MARGIN = 512 * MIB


# --- the fleet ----------------------------------------------------------------------


def _claims(rng: random.Random) -> list[list[int]]:
    """Bytes claimed per GPU: each instance on a random GPU, or the next one with room."""
    room = GPU_TOTAL - RESERVED
    claimed = [[0] * GPUS_PER_NODE for _ in range(N_NODES)]
    slots = N_NODES * GPUS_PER_NODE
    for _ in range(N_INSTANCES):
        size = int(rng.uniform(2, 40) * GIB)
        start = rng.randrange(slots)
        for step in range(slots):
            node, index = divmod((start + step) % slots, GPUS_PER_NODE)
            if claimed[node][index] + size <= room:
                claimed[node][index] += size
                break
    return claimed


def _gpu(rng: random.Random, node: int, index: int, claimed: int, priority: int) -> GpuView:
    # what NVML sees: our instances (within a few % of their claims), 5 % foreign use
    used = int(claimed * rng.uniform(0.97, 1.03)) if claimed else 0
    if rng.random() < 0.05:
        used += int(rng.uniform(0.5, 6) * GIB)
    return GpuView(
        id=str(node * GPUS_PER_NODE + index),
        node_id=str(node),
        index=index,
        name="A100-80GB",
        total=GPU_TOTAL,
        reserved=RESERVED,
        claimed=claimed,
        observed_free=max(GPU_TOTAL - used, 0),
        priority=priority,
    )


def build_fleet(rng: random.Random) -> list[NodeView]:
    claimed = _claims(rng)
    nodes = []
    for node in range(N_NODES):
        priority = 1 if rng.random() < 0.1 else 0
        gpus = tuple(
            _gpu(rng, node, index, claimed[node][index], priority) for index in range(GPUS_PER_NODE)
        )
        nodes.append(
            NodeView(
                id=str(node),
                name=f"node-{node:04}",
                accepts_work=rng.random() > 0.02,
                labels={"zone": rng.choice(ZONES)},
                has_model=rng.random() < 0.1,
                can_download=rng.random() < 0.95,
                ram_free=int(rng.uniform(64, 512) * GIB),
                gpus=gpus,
                replicas_here=rng.choice((0, 0, 0, 1, 2)),
                status="online",
            )
        )
    return nodes


def apply(nodes: list[NodeView], placement: Placement) -> None:
    """Claim the placement's memory on its node (as the scheduler would)."""
    position = int(placement.node_id)
    node = nodes[position]
    claims = dict(zip(placement.gpu_ids, placement.gpu_bytes, strict=True))
    gpus = tuple(
        replace(
            gpu,
            claimed=gpu.claimed + claims[gpu.id],
            observed_free=max(gpu.observed_free - claims[gpu.id], 0),
        )
        if gpu.id in claims
        else gpu
        for gpu in node.gpus
    )
    nodes[position] = replace(
        node,
        gpus=gpus,
        ram_free=node.ram_free - placement.host_bytes,
        replicas_here=node.replicas_here + 1,
        has_model=True,
    )


# --- sizers -------------------------------------------------------------------------


@dataclass(frozen=True)
class ConstantSizer:
    """A fake sizer of constant cost with the real one's figures for one GPU: ``n_layer``
    equal layers, ``overhead`` per GPU used, ``host_base`` always on the host."""

    need: int
    n_layer: int
    overhead: int = 400 * MIB
    host_base: int = 512 * MIB

    @property
    def layer(self) -> int:
        return (self.need - self.overhead) // self.n_layer

    def single_gpu_need(self) -> int:
        return self.need

    def _layers(self, free: Sequence[int]) -> list[int]:
        left, layers = self.n_layer, []
        for size in free:
            count = min(max((size - self.overhead) // self.layer, 0), left)
            layers.append(count)
            left -= count
        return layers

    def on_gpus(self, free: Sequence[int]) -> Fit | None:
        layers = self._layers(free)
        if sum(layers) < self.n_layer:
            return None
        gpu_bytes = tuple(self.overhead + count * self.layer for count in layers)
        return Fit(gpu_bytes, self.host_base, -1, tuple(float(size) for size in free))

    def partial(self, free: Sequence[int], host_free: int) -> Fit | None:
        layers = self._layers(free)
        host = self.host_base + (self.n_layer - sum(layers)) * self.layer
        if not sum(layers) or host > host_free:
            return None
        gpu_bytes = tuple(self.overhead + count * self.layer for count in layers)
        return Fit(gpu_bytes, host, sum(layers), None)

    def cpu_only(self, host_free: int) -> Fit | None:
        host = self.host_base + self.n_layer * self.layer
        return Fit((), host, 0, None) if host <= host_free else None


def load_facts(folder: Path, name: str, spec: dict[str, int]) -> ModelFacts:
    (path,) = write_tiny_model(
        folder / f"{name}.gguf", header_only=True, n_vocab=32000, n_ctx_train=8192, **spec
    )
    return parse_model([PartialFileSource(path)])


@dataclass(frozen=True)
class Case:
    """One kind of request: what it asks, and how to get a sizer for it."""

    name: str
    request: Request
    sizer: Callable[[], Sizer]


def cases(facts: dict[str, ModelFacts], mode: str) -> list[Case]:
    """The three kinds of request for ``mode``: "estimator", "fresh" (a new estimator
    sizer per placement) or "constant" (the fake)."""
    shared = {name: EstimatorSizer(item, SETTINGS, MARGIN) for name, item in facts.items()}
    requests = {
        "one GPU (7B)": ("7b", Request()),
        "several GPUs (70B)": ("70b", Request(allow_multi_gpu=True)),
        "partial offload (70B)": ("70b", Request(allow_cpu_offload=True)),
    }
    found = []
    for label, (model, request) in requests.items():
        if mode == "fresh":
            item = facts[model]

            def make(item: ModelFacts = item) -> Sizer:
                return EstimatorSizer(item, SETTINGS, MARGIN)

        elif mode == "constant":
            fake = ConstantSizer(shared[model].single_gpu_need(), shared[model].shape.n_layer)

            def make(fake: ConstantSizer = fake) -> Sizer:
                return fake

        else:

            def make(sizer: EstimatorSizer = shared[model]) -> Sizer:
                return sizer

        found.append(Case(label, request, make))
    return found


# --- measurements -------------------------------------------------------------------


def varied(request: Request, rng: random.Random) -> Request:
    """The request with a random policy and, half the time, a zone to stay in."""
    labels = {"zone": rng.choice(ZONES)} if rng.random() < 0.5 else {}
    return replace(request, policy=rng.choice(tuple(Policy)), node_labels=labels)


def time_cases(nodes: list[NodeView], kinds: list[Case], runs: int, seed: int) -> list[dict]:
    """Per kind ``runs`` placements on the unchanged fleet: wall and CPU time of each."""
    rng = random.Random(seed)
    rows, all_wall, all_cpu = [], [], []
    for case in kinds:
        wall, cpu, seen = [], [], set()
        for _ in range(runs):
            request = varied(case.request, rng)
            started, started_cpu = time.perf_counter(), time.process_time()
            result = place(nodes, request, case.sizer())
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
            seen.add(result.kind.value if isinstance(result, Placement) else "refused")
        all_wall += wall
        all_cpu += cpu
        rows.append(_row(case.name, wall, cpu, sorted(seen)))
    rows.append(_row("all", all_wall, all_cpu, []))
    return rows


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def _row(name: str, wall: list[float], cpu: list[float], kinds: list[str]) -> dict:
    return {
        "case": name,
        "placements": len(wall),
        "p50_ms": statistics.median(wall),
        "p99_ms": _percentile(wall, 0.99),
        "max_ms": max(wall),
        "cpu_p50_ms": statistics.median(cpu),
        "cpu_p99_ms": _percentile(cpu, 0.99),
        "results": kinds,
    }


def back_to_back(nodes: list[NodeView], kinds: list[Case], seed: int, count: int) -> dict:
    rng = random.Random(seed)
    nodes = list(nodes)
    placed = 0
    started, started_cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        case = kinds[i % len(kinds)]
        result = place(nodes, varied(case.request, rng), case.sizer())
        if isinstance(result, Placement):
            apply(nodes, result)
            placed += 1
    total, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    return {
        "placements": count,
        "placed": placed,
        "total_s": total,
        "mean_ms": total / count * 1000,
        "cpu_total_s": cpu,
    }


# --- output -------------------------------------------------------------------------


def table(results: dict) -> str:
    lines = [
        "| sizer | request | placements | p50 ms | p99 ms | max ms | CPU p50 ms | CPU p99 ms "
        "| placed as |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, rows in results["single"].items():
        for row in rows:
            lines.append(
                f"| {mode} | {row['case']} | {row['placements']:,} | {row['p50_ms']:.2f} "
                f"| {row['p99_ms']:.2f} | {row['max_ms']:.2f} | {row['cpu_p50_ms']:.2f} "
                f"| {row['cpu_p99_ms']:.2f} | {', '.join(row['results'])} |"
            )
    lines += [
        "",
        "| sizer | back to back, claims applied | placed | total s | mean ms | CPU total s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, row in results["back_to_back"].items():
        lines.append(
            f"| {mode} | {row['placements']:,} | {row['placed']:,} | {row['total_s']:.2f} "
            f"| {row['mean_ms']:.2f} | {row['cpu_total_s']:.2f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400, help="placements per request kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--back-to-back", type=int, default=1000, dest="back_to_back")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after setting up (keeps full collections of the fleet out of p99)",
    )
    return parser.parse_args()


def measure(facts: dict[str, ModelFacts], nodes: list[NodeView], args: argparse.Namespace) -> dict:
    results: dict = {"single": {}, "back_to_back": {}, "gc_freeze": args.gc_freeze}
    for mode in ("estimator", "fresh", "constant"):
        kinds = cases(facts, mode)
        label = {"fresh": "estimator, new per placement"}.get(mode, mode)
        results["single"][label] = time_cases(nodes, kinds, args.runs, args.seed)
        if mode != "fresh":
            results["back_to_back"][label] = back_to_back(
                nodes, kinds, args.seed, args.back_to_back
            )
    return results


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        facts = {
            "7b": load_facts(Path(folder), "7b", MODEL_7B),
            "70b": load_facts(Path(folder), "70b", MODEL_70B),
        }
    load_before = os.getloadavg()[0]
    nodes = build_fleet(random.Random(args.seed))
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    results = measure(facts, nodes, args)
    results["machine"] = (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load_before:.2f} "
        f"before, {os.getloadavg()[0]:.2f} after"
    )
    print(table(results))
    print(f"\n{results['machine']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
