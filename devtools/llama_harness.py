"""Proof against llama.cpp: load a model with llama-cpp-python on the CPU, read the
buffer sizes it logs, and compare them with the estimate, buffer by buffer.

``measure()`` runs ``llama_worker.py`` in fresh processes (llama.cpp keeps global
state; a crash must not take the caller down) and parses its log:

    load_tensors:   CPU_Mapped model buffer size =     3.11 MiB
    llama_kv_cache:        CPU KV buffer size =     0.25 MiB
    llama_kv_cache: size =    0.25 MiB (   512 cells, ...), K (f16):    0.12 MiB, V (f16): ...
    llama_memory_recurrent:        CPU RS buffer size =     0.02 MiB
    llama_context:        CPU  output buffer size =     0.00 MiB
    sched_reserve:        CPU compute buffer size =    11.76 MiB
    ~llama_context:        CPU compute buffer size is  11.7598 MiB, matches expectation ...

Figures are printed in MiB with two decimals (four for the compute buffer at
teardown), so a reported size is known to about ±5 KiB (±53 bytes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.units import MIB
from models_app.estimator.result import COMPONENTS, Estimate
from models_app.estimator.settings import RunSettings
from scheduling.backend_logs import Reported, parse_log

WORKER = Path(__file__).with_name("llama_worker.py")
TOLERANCES = {
    "weights": ("abs", MIB),
    "kv_cache": ("abs", MIB),
    "compute": ("rel", 0.10),
    "output": ("abs", MIB),
    "total": ("rel", 0.03),
}


def worker_config(model_path: str | Path, settings: RunSettings) -> dict[str, object]:
    """The settings the worker passes to llama_model_params / llama_context_params."""
    return {
        "model_path": str(model_path),
        "n_ctx": settings.n_ctx,
        "n_batch": settings.n_batch,
        "n_ubatch": settings.n_ubatch,
        "n_seq_max": settings.n_seq_max,
        "type_k": settings.type_k.value,
        "type_v": settings.type_v.value,
        "flash_attn": settings.flash_attn,
        "use_mmap": settings.use_mmap,
        "offload_kqv": settings.offload_kqv,
        "kv_unified": settings.kv_unified,
        "swa_full": settings.swa_full,
        "embeddings": settings.embeddings,
        "pooling": settings.pooling,
        "n_gpu_layers": 0,
    }


def _run_worker(configs: list[dict[str, object]], timeout: float) -> list[Reported]:
    done = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(configs)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    results = [parse_log(item["log"], item["error"]) for item in map(json.loads, lines)]
    failure = f"worker exited with {done.returncode}: {done.stderr[-2000:]}"
    return results + [Reported({}, {}, error=failure)] * (len(configs) - len(results))


def measure(
    runs: Sequence[tuple[str | Path, RunSettings]],
    workers: int = 2,
    per_process: int = 8,
    timeout: float = 300.0,
    embeddings: bool = False,
) -> list[Reported]:
    """Load each (model, settings) with llama.cpp on the CPU; what it reported, in order.

    ``embeddings`` creates every context as an embedding server does (pooled outputs),
    whatever its settings say."""
    configs = [worker_config(path, settings) for path, settings in runs]
    for config in configs:
        config["embeddings"] = embeddings or config["embeddings"]
    chunks = [configs[i : i + per_process] for i in range(0, len(configs), per_process)]
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        parts = list(pool.map(lambda chunk: _run_worker(chunk, timeout), chunks))
    return [item for part in parts for item in part]


@dataclass(frozen=True, slots=True)
class Row:
    """Estimated against reported for one component (all devices of the run)."""

    component: str
    estimated: int
    reported: int
    resolution: int

    @property
    def error(self) -> int:
        return self.estimated - self.reported

    @property
    def relative(self) -> float:
        return self.error / self.reported if self.reported else (0.0 if not self.error else 1.0)

    @property
    def within(self) -> bool:
        kind, limit = TOLERANCES[self.component]
        slack = abs(self.error) - self.resolution
        if kind == "abs":
            return slack <= limit
        return slack <= limit * self.reported


def compare(estimate: Estimate, reported: Reported) -> list[Row]:
    """One row per component and one for the total (a CPU run: the host's figures)."""
    host = estimate.cpu
    rows = [
        Row(name, host.component(name), reported.component(name), reported.resolution.get(name, 0))
        for name in COMPONENTS
        if name != "overhead"
    ]
    slack = sum(row.resolution for row in rows)
    rows.append(Row("total", host.total, reported.total, slack))
    return rows


def format_table(rows: Sequence[Row], label: str = "") -> str:
    head = f"{'component':<10} {'estimated':>14} {'reported':>14} {'error':>12} {'rel':>8}  ok"
    lines = [label, head] if label else [head]
    for row in rows:
        lines.append(
            f"{row.component:<10} {row.estimated:>14,} {row.reported:>14,} {row.error:>12,} "
            f"{row.relative:>8.2%}  {'yes' if row.within else 'NO'}"
        )
    return "\n".join(lines)
