"""Benchmark of the memory estimator: speed, and accuracy against llama.cpp.

* Header parsing of a Llama-3-70B-shaped GGUF header (80 layers, n_embd 8192,
  64 heads / 8 KV heads, n_ff 28672, vocab 128256, Q4_K; header only). Target < 50 ms.
* One estimate for it (n_ctx 8192), median of many runs. Target < 1 ms. Reported
  cold (the compute-buffer cache emptied before each run; the per-model
  precomputation, ``prepare``, done once) and warm (the same settings again), on the
  CPU only and on two GPUs.
* The planner's ``max_gpu_layers`` for it on two 24 GiB GPUs (a search over
  n_gpu_layers, about 20 estimates), the compute-buffer cache emptied before each search.
* The accuracy matrix (devtools/estimator_matrix.py) against llama.cpp on the CPU:
  the worst error per component.

Run from the repository root::

    .venv/bin/python bench/estimator/run.py [--runs 200] [--no-matrix]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from gguf import GGMLQuantizationType as Q  # noqa: E402

from devtools.estimator_matrix import cases, write_models  # noqa: E402
from devtools.llama_harness import Row, compare, measure  # noqa: E402
from devtools.tiny_gguf import write_tiny_model  # noqa: E402
from models_app.estimator import (  # noqa: E402
    GpuDevice,
    RunSettings,
    estimate,
    format_bytes,
    max_gpu_layers,
)
from models_app.estimator import compute as compute_module  # noqa: E402
from models_app.estimator.shape import build_shape  # noqa: E402
from models_app.gguf import ModelFacts, PartialFileSource, load_model_facts, parse_model  # noqa: E402

LLAMA_70B = {
    "n_layer": 80,
    "n_embd": 8192,
    "n_head": 64,
    "n_head_kv": 8,
    "n_ff": 28672,
    "n_vocab": 128256,
    "n_ctx_train": 8192,
    "weight_type": Q.Q4_K,
    "name": "70B-shaped",
}
TWO_GPUS = [GpuDevice("CUDA0", 80 << 30), GpuDevice("CUDA1", 80 << 30)]
TWO_SMALL_GPUS = [GpuDevice("CUDA0", 24 << 30), GpuDevice("CUDA1", 24 << 30)]


def median_ms(
    action: Callable[[], object], runs: int, before: Callable[[], None] | None = None
) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def speed(runs: int) -> ModelFacts:
    with tempfile.TemporaryDirectory() as directory:
        (path,) = write_tiny_model(Path(directory) / "70b.gguf", header_only=True, **LLAMA_70B)
        parse_ms = median_ms(lambda: parse_model([PartialFileSource(path)]), max(runs // 10, 10))
        facts = parse_model([PartialFileSource(path)])
    count = facts.tensor_count
    print(f"header parse (70B-shaped, {count} tensors): {parse_ms:.2f} ms  (target < 50 ms)")
    print(
        f"prepare (once per model, then cached): {median_ms(lambda: build_shape(facts), 20):.2f} ms"
    )
    settings = RunSettings(n_ctx=8192)
    clear = compute_module._CACHE.clear
    for label, gpus in (("CPU only", []), ("2 GPUs", TWO_GPUS)):
        estimate(facts, settings, gpus)
        cold = median_ms(lambda gpus=gpus: estimate(facts, settings, gpus), runs, clear)
        warm = median_ms(lambda gpus=gpus: estimate(facts, settings, gpus), runs)
        print(f"estimate, {label}: cold {cold:.3f} ms, warm {warm:.3f} ms  (target < 1 ms)")
    result = estimate(facts, settings, TWO_GPUS)
    for device in result.devices:
        total, compute = format_bytes(device.total), format_bytes(device.compute)
        print(f"  {device.device}: total {total} (compute {compute})")
    planner(facts, settings, max(runs // 10, 10))
    return facts


def planner(facts: ModelFacts, settings: RunSettings, runs: int) -> None:
    clear = compute_module._CACHE.clear
    plan_ms = median_ms(lambda: max_gpu_layers(facts, settings, TWO_SMALL_GPUS), runs, clear)
    plan = max_gpu_layers(facts, settings, TWO_SMALL_GPUS)
    print(
        f"max_gpu_layers, 2 x 24 GiB: {plan_ms:.2f} ms, cold "
        f"({plan.n_gpu_layers} of {facts.block_count + 1} layers fit)"
    )


class Worst:
    """Worst figures per component over the matrix."""

    def __init__(self) -> None:
        self.absolute: dict[str, tuple[Row, str]] = {}
        self.relative: dict[str, tuple[Row, str]] = {}  # among figures of 1 MiB or more
        self.beyond_precision: dict[str, int] = {}
        self.rows: dict[str, int] = {}

    def add(self, row: Row, case: str) -> None:
        name = row.component
        self.rows[name] = self.rows.get(name, 0) + 1
        if abs(row.error) > row.resolution:
            self.beyond_precision[name] = self.beyond_precision.get(name, 0) + 1
        if name not in self.absolute or abs(row.error) > abs(self.absolute[name][0].error):
            self.absolute[name] = (row, case)
        big = row.reported >= 1 << 20
        if big and (
            name not in self.relative or abs(row.relative) > abs(self.relative[name][0].relative)
        ):
            self.relative[name] = (row, case)

    def print(self) -> None:
        print(
            f"{'component':<10} {'worst |error|':>14} {'(log precision)':>16} "
            f"{'worst rel. >=1MiB':>18} {'beyond precision':>17}  worst case"
        )
        for name, (row, case) in self.absolute.items():
            rel = self.relative.get(name)
            rel_text = f"{rel[0].relative:+.4%}" if rel else "-"
            beyond = f"{self.beyond_precision.get(name, 0)}/{self.rows[name]}"
            figures = f"{row.error:>+14,} {row.resolution:>16,} {rel_text:>18} {beyond:>17}"
            print(f"{name:<10} {figures}  {case}")


def accuracy() -> bool:
    with tempfile.TemporaryDirectory() as directory:
        paths = write_models(Path(directory))
        runs = list(cases())
        start = time.perf_counter()
        reports = measure([(paths[case.model], case.settings) for case in runs])
        elapsed = time.perf_counter() - start
        worst = Worst()
        failures = [case.name for case, report in zip(runs, reports, strict=True) if report.error]
        for case, report in zip(runs, reports, strict=True):
            if report.error:
                continue
            for row in compare(
                estimate(load_model_facts(paths[case.model]), case.settings), report
            ):
                worst.add(row, case.name)
                if not row.within:
                    failures.append(f"{case.name} ({row.component})")
    print(
        f"\naccuracy matrix: {len(runs)} llama.cpp loads in {elapsed:.1f} s, "
        f"{len(failures)} outside tolerance"
    )
    worst.print()
    for name in failures:
        print(f"  outside tolerance: {name}")
    return not failures


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--no-matrix", action="store_true")
    options = parser.parse_args()
    print(f"machine: {cpu_name()}, {platform.platform()}, Python {platform.python_version()}")
    speed(options.runs)
    return 0 if options.no_matrix or accuracy() else 1


if __name__ == "__main__":
    raise SystemExit(main())
