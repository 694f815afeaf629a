"""Benchmark of starting a backend: ``launch()`` + ``wait_ready()`` next to starting by hand.

Both sides start the same ``python -m llama_cpp.server`` command line (the server part
of ``scheduling.backend.argv``, so the same model, port, n_ctx 256 and flags) with the
same environment, on a tiny generated model, and poll ``GET /v1/models`` the same way
(``wait_ready``, 50 ms between polls) until it answers 200:

- **by hand**: ``subprocess.Popen(server command)``, then the poll;
- **gpufleet**: ``launch(spec)`` (the detached runner, its pid file), then the poll.

After one untimed run of each, runs alternate (by hand first on even runs). Printed:
every run, then median/min/max and the overhead two ways: the difference of the whole
starts' medians, and that of the spawn phases (``launch()`` returns when the runner has
reported the pids, just before it execs the server; ``Popen()`` returns once the server
has exec'd), after which both sides do identical work. Target < 300 ms.

Run from the repository root::

    .venv/bin/python bench/backend_start/run.py [--runs 9] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import gguf  # noqa: E402

from devtools.tiny_gguf import write_tiny_model  # noqa: E402
from scheduling import backend, ports  # noqa: E402
from scheduling.backend import LaunchSpec  # noqa: E402

TIMEOUT = 120.0


def by_hand(spec: LaunchSpec, interval: float) -> tuple[float, float]:
    """(seconds from Popen of the server to its first 200 on /v1/models, Popen itself)."""
    command = backend.argv(spec)
    command = command[command.index("--") + 1 :]
    env = backend.server_env(spec)
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_path.open("ab") as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        spawned = time.perf_counter() - start
        alive = lambda: process.poll() is None  # noqa: E731
        ready = backend.wait_ready(spec.host, spec.port, TIMEOUT, alive, interval)
        elapsed = time.perf_counter() - start
    process.terminate()
    process.wait(timeout=30)
    if not ready:
        raise SystemExit(f"the server started by hand never became ready: {spec.log_path}")
    return elapsed, spawned


def with_launch(spec: LaunchSpec, interval: float) -> tuple[float, float]:
    """(seconds from launch() to ready, seconds launch() itself took)."""
    start = time.perf_counter()
    launched = backend.launch(spec)
    launched_at = time.perf_counter()
    alive = lambda: backend.is_running(launched.server_pid, spec.instance_id)  # noqa: E731
    ready = backend.wait_ready(spec.host, spec.port, TIMEOUT, alive, interval)
    elapsed = time.perf_counter() - start
    backend.stop(launched.runner_pid, launched.server_pid, 30, spec.instance_id)
    if not ready:
        raise SystemExit(f"the launched server never became ready: {spec.log_path}")
    return elapsed, launched_at - start


def fresh(spec: LaunchSpec, work: Path, run: int) -> LaunchSpec:
    port = ports.free_port(spec.port, spec.port + 1000, set())
    assert port is not None, "no free port"
    return replace(
        spec,
        instance_id=f"bench-{uuid.uuid4()}",
        port=port,
        log_path=work / f"run-{run}" / "server.log",
        state_dir=work / f"run-{run}" / "state",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between polls")
    parser.add_argument("--port", type=int, default=23000, help="first port to try")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-backend-start-") as tmp:
        work = Path(tmp)
        (model,) = write_tiny_model(
            work / "tiny.gguf",
            header_only=False,
            n_layer=2,
            n_embd=64,
            n_head=4,
            n_head_kv=2,
            n_ff=128,
            n_ctx_train=512,
            weight_type=gguf.GGMLQuantizationType.Q8_0,
        )
        base = LaunchSpec(
            instance_id="bench",
            model_path=model,
            port=args.port,
            log_path=work / "server.log",
            state_dir=work / "state",
            served_name="tiny",
            n_ctx=256,
            cuda_visible_devices="",
        )
        hand: list[float] = []
        popen_only: list[float] = []
        ours: list[float] = []
        launch_only: list[float] = []
        by_hand(fresh(base, work, -1), args.interval)  # untimed: page cache, .pyc files
        with_launch(fresh(base, work, -2), args.interval)
        for run in range(args.runs):
            order = ("hand", "ours") if run % 2 == 0 else ("ours", "hand")
            for side in order:
                spec = fresh(base, work, run * 2 + (side == "ours"))
                if side == "hand":
                    total, only = by_hand(spec, args.interval)
                    hand.append(total)
                    popen_only.append(only)
                else:
                    total, only = with_launch(spec, args.interval)
                    ours.append(total)
                    launch_only.append(only)
            print(
                f"run {run}: by hand {hand[-1] * 1000:7.1f} ms (Popen {popen_only[-1] * 1000:5.1f})"
                f"   gpufleet {ours[-1] * 1000:7.1f} ms (launch() {launch_only[-1] * 1000:5.1f})",
                flush=True,
            )
    report(hand, popen_only, ours, launch_only, args)
    return 0


def report(
    hand: list[float],
    popen_only: list[float],
    ours: list[float],
    launch_only: list[float],
    args: object,
) -> None:
    def row(label: str, values: list[float]) -> str:
        low, mid, high = min(values), statistics.median(values), max(values)
        return f"| {label:<44} | {mid * 1000:8.1f} | {low * 1000:8.1f} | {high * 1000:8.1f} |"

    spawn = statistics.median(launch_only) - statistics.median(popen_only)
    whole = statistics.median(ours) - statistics.median(hand)
    print()
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"runs: {len(hand)} each, {args}")
    print()
    print(f"| {'ms':<44} | {'median':>8} | {'min':>8} | {'max':>8} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    print(row("by hand: Popen(server) → /v1/models 200", hand))
    print(row("  of which Popen() returned (server exec'd)", popen_only))
    print(row("gpufleet: launch() → wait_ready() True", ours))
    print(row("  of which launch() returned (pids known)", launch_only))
    print()
    print(f"overhead, whole start (difference of medians): {whole * 1000:7.1f} ms")
    print(f"overhead, spawn phase (launch() − Popen()):     {spawn * 1000:7.1f} ms")
    print("(after the spawn phase both sides run the same server to the same first 200;")
    print(" on a busy machine the whole-start difference is mostly the server's own noise)")
    worst = max(whole, spawn)
    print(f"target: overhead < 300 ms: {'met' if worst < 300 else 'NOT met'}")


if __name__ == "__main__":
    raise SystemExit(main())
