"""Benchmark of the latency and throughput the gateway adds, next to the upstream alone.

One fake OpenAI-compatible upstream (``fake_upstream.py``, its own process: its CPU is
not the gateway's) streams ``--tokens`` chunks, one every ``--interval`` ms, so the
"model" costs nothing and never varies. The same load (``load.py``: C clients sending
streaming chat completions back to back, each with one keep-alive connection) is sent
for ``--seconds`` per point, in one run, to

- **direct**: the upstream itself;
- **gateway**: ``uvicorn gateway.asgi:application`` (started here on a throw-away
  SQLite state dir with one node, model, deployment ``bench``, one running instance on
  the upstream's port and one inference key; or ``--gateway-url`` / ``--key``: one
  that already runs);
- **litellm** (only with ``--litellm`` and if ``litellm`` is importable: the LiteLLM
  proxy on the same upstream, for comparison; it is never installed by this script).

For each concurrency (1, 16, 64) the targets alternate ``--repeats`` times (ABBA:
direct, gateway, gateway, direct, …) and each figure is the median over the repeats.
Reported per concurrency: TTFT p50 / p99 of both, the TTFT the gateway adds (gateway −
direct), tokens/s of both and their ratio (gateway ÷ direct), and the CPU of the
gateway process and its children over the measured window (psutil ``cpu_times``
deltas, % of one core). The load generator runs in this process and competes with the
gateway for the same cores, so its own CPU is measured and printed as well, with the
upstream's.

Targets at 64 streams: added TTFT p50 < 1 ms and p99 < 5 ms, tokens/s ratio ≥ 0.98; the
exit status is 0 when they are met without errors, 1 otherwise.

Run from the repository root::

    .venv/bin/python bench/gateway/run.py [--seconds 10] [--repeats 2] [--out /tmp/gw.json]
    .venv/bin/python bench/gateway/run.py --gateway-url http://127.0.0.1:8001 --key gfk_... \\
        --upstream-url http://127.0.0.1:8101   # an already running gateway
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.util
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
from load import CpuMeter, MachineMeter, RunStats, run_load, start_upstream_process

REPO = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1
_CLEARED_ENV = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY")
TARGET_CONCURRENCY = 64
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_RATIO = 0.98
OTHERS_WARNING = 15.0  # % of one core used by other processes during a window

SETUP_CODE = """
from django.utils import timezone
from gateway.models import InferenceKey
from inventory.models import Node
from models_app.models import CatalogModel
from scheduling.models import Deployment, Instance

now = timezone.now()
node = Node.objects.create(name="bench", address="127.0.0.1", last_heartbeat=now)
model = CatalogModel.objects.create(
    display_name="Bench fake model", source_kind="hf", hf_repo="bench/fake-GGUF",
    hf_filename="fake-Q8_0.gguf", revision="main",
    files=[{{"name": "fake-Q8_0.gguf", "size": 1 << 30, "sha256": ""}}],
    size_bytes=1 << 30, architecture="llama", quantization="Q8_0",
)
deployment = Deployment.objects.create(
    model=model, served_name={served!r}, replicas=1, min_replicas=1
)
Instance.objects.create(
    deployment=deployment, node=node, state="running", port={port}, server_pid={pid},
    started_at=now, ready_at=now,
)
key, raw = InferenceKey.issue("bench")
print("BENCH_KEY=" + raw)
"""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count() or 0
    return {
        "nproc": nproc,
        "cpu_model": model or platform.processor() or "unknown",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
    }


@dataclass
class Target:
    name: str
    url: str
    key: str | None
    model: str
    process: psutil.Process | None = None  # whose CPU (with children) is measured


@dataclass
class Stack:
    """The processes this run started, stopped by pid on close (SIGTERM, then SIGKILL)."""

    keep: bool = False
    state_dir: Path | None = None
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")}
        for name in _CLEARED_ENV:
            env.pop(name, None)
        assert self.state_dir is not None
        env |= {
            "GPUFLEET_STATE_DIR": str(self.state_dir),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONUNBUFFERED": "1",
        }
        return env

    def make_state_dir(self) -> Path:
        self.state_dir = Path(tempfile.mkdtemp(prefix="gpufleet-bench-gateway-"))
        return self.state_dir

    def manage(self, *args: str, timeout: float = 300) -> str:
        argv = [sys.executable, "manage.py", *args]
        done = subprocess.run(
            argv, cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:3])} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        assert self.state_dir is not None
        log = (self.state_dir / f"{name}.log").open("ab")
        self.logs.append(log)
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.procs.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen[Any]) -> None:
        self.procs.append(proc)

    def log_tail(self, name: str, lines: int = 30) -> str:
        if self.state_dir is None:
            return ""
        path = self.state_dir / f"{name}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.procs.clear()
        for log in self.logs:
            log.close()
        self.logs.clear()
        if self.state_dir is not None and not self.keep:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def wait_ready(
    url: str, key: str | None, proc: subprocess.Popen[Any] | None, timeout: float
) -> None:
    """Until ``GET {url}/v1/models`` answers 200 (with the key)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before it was ready ({last})")
        try:
            response = httpx.get(f"{url}/v1/models", headers=headers, timeout=5)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise TimeoutError(f"{url}/v1/models did not answer 200 within {timeout:.0f} s ({last})")


def listening_process(url: str) -> psutil.Process | None:
    """The process that listens on the URL's port on this machine, if psutil can tell."""
    port = httpx.URL(url).port or 80
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN and conn.laddr
            if listening and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    return None


def start_gateway(stack: Stack, upstream_port: int, upstream_pid: int, served: str) -> Target:
    stack.manage("migrate", "--noinput")
    code = SETUP_CODE.format(served=served, port=upstream_port, pid=upstream_pid)
    output = stack.manage("shell", "-c", code)
    keys = [line[len("BENCH_KEY=") :] for line in output.splitlines() if "BENCH_KEY=" in line]
    if not keys:
        raise RuntimeError(f"the setup printed no key:\n{output}")
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "gateway.asgi:application"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    argv += ["--log-level", "warning"]
    proc = stack.spawn("gateway", argv, stack.env())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, keys[0], proc, timeout=90)
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"the gateway: {exc}\n{stack.log_tail('gateway')}") from None
    return Target("gateway", url, keys[0], served, psutil.Process(proc.pid))


def start_litellm(stack: Stack, upstream_url: str, exe: str | None = None) -> Target | str:
    """The LiteLLM proxy on the upstream, or why not. ``exe``: its ``litellm`` command
    (LiteLLM is no dependency of the project: install it in a virtualenv of its own)."""
    if exe is None:
        if importlib.util.find_spec("litellm") is None:
            return "litellm is not importable (give --litellm-bin)"
        venv_bin = str(Path(sys.executable).parent)
        exe = shutil.which("litellm", path=venv_bin + os.pathsep + os.environ.get("PATH", ""))
        if exe is None:
            return "litellm is importable but its `litellm` command was not found"
    port = free_port()
    argv = [exe, "--model", "openai/bench", "--api_base", f"{upstream_url}/v1"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    master = "sk-bench-" + secrets.token_hex(16)  # LiteLLM refuses to start without one
    env = stack.env() | {"OPENAI_API_KEY": "sk-bench", "LITELLM_MASTER_KEY": master}
    proc = stack.spawn("litellm", argv, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, master, proc, timeout=180)
    except (RuntimeError, TimeoutError) as exc:
        return f"did not start: {exc}\n{stack.log_tail('litellm')}"
    return Target("litellm", url, master, "openai/bench", psutil.Process(proc.pid))


def measure(
    target: Target,
    concurrency: int,
    args: argparse.Namespace,
    processes: dict[str, psutil.Process],
) -> RunStats:
    """One run against one target; the CPU of every process of ``processes`` (the
    upstream, the gateway, LiteLLM: whichever is targeted or idle) and of the whole
    machine is measured over the same window."""
    meters: dict[str, CpuMeter | MachineMeter] = {"machine": MachineMeter()}
    for name, process in processes.items():
        meters[name] = CpuMeter(process, children=name != "upstream")
    stats = asyncio.run(
        run_load(
            target.url,
            concurrency,
            args.seconds,
            key=target.key,
            warmup=args.warmup,
            model=target.model,
            meters=meters,
            stagger=min(args.warmup, args.tokens * args.interval / 1000),
        )
    )
    stats.cpu_percent["others"] = others_cpu(stats)
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in stats.cpu_percent.items() if k != "machine")
    print(
        f"  c={concurrency:<3} {target.name:<8} TTFT p50 {stats.ttft_p50_ms:7.2f} ms "
        f"p99 {stats.ttft_p99_ms:7.2f} ms  {stats.tokens_per_s:7.0f} tok/s  "
        f"{stats.requests} req {stats.errors} err  CPU %: load {stats.load_cpu_percent:.0f}, "
        + cpu,
        flush=True,
    )
    for sample in stats.error_samples:
        print(f"    error: {sample}", flush=True)
    return stats


def others_cpu(stats: RunStats) -> float:
    """CPU used on the machine by processes other than the load generator, the target
    and the upstream (other work on a shared machine), % of one core."""
    cpu = stats.cpu_percent
    ours = stats.load_cpu_percent + sum(v for k, v in cpu.items() if k != "machine")
    return max(0.0, cpu.get("machine", math.nan) - ours)


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def summarize(name: str, runs: list[RunStats]) -> dict[str, float]:
    return {
        "ttft_p50_ms": _median([r.ttft_p50_ms for r in runs]),
        "ttft_p99_ms": _median([r.ttft_p99_ms for r in runs]),
        "tokens_per_s": _median([r.tokens_per_s for r in runs]),
        "requests": _median([r.requests for r in runs]),
        "errors": sum(r.errors for r in runs),
        "cpu_percent": _median([r.cpu_percent.get(name, math.nan) for r in runs]),
        "upstream_cpu_percent": _median([r.cpu_percent.get("upstream", math.nan) for r in runs]),
        "load_cpu_percent": _median([r.load_cpu_percent for r in runs]),
        "others_cpu_percent": _median([r.cpu_percent.get("others", math.nan) for r in runs]),
        "others_cpu_max": max((r.cpu_percent.get("others", 0.0) for r in runs), default=0.0),
    }


def compare(direct: dict[str, float], other: dict[str, float]) -> dict[str, float]:
    ratio = other["tokens_per_s"] / direct["tokens_per_s"] if direct["tokens_per_s"] else math.nan
    return {
        "added_ttft_p50_ms": other["ttft_p50_ms"] - direct["ttft_p50_ms"],
        "added_ttft_p99_ms": other["ttft_p99_ms"] - direct["ttft_p99_ms"],
        "tokens_ratio": ratio,
    }


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def table(name: str, rows: list[dict[str, Any]]) -> str:
    head = (
        f"| concurrency | direct TTFT p50/p99 ms | {name} TTFT p50/p99 ms | added p50/p99 ms "
        f"| tok/s direct | tok/s {name} | ratio | {name} CPU % |"
    )
    lines = [head, "|" + "---|" * 8]
    for row in rows:
        d, o, c = row["direct"], row[name], row[f"{name}_vs_direct"]
        lines.append(
            f"| {row['concurrency']} "
            f"| {_f(d['ttft_p50_ms'])} / {_f(d['ttft_p99_ms'])} "
            f"| {_f(o['ttft_p50_ms'])} / {_f(o['ttft_p99_ms'])} "
            f"| {c['added_ttft_p50_ms']:+.2f} / {c['added_ttft_p99_ms']:+.2f} "
            f"| {_f(d['tokens_per_s'], 0)} | {_f(o['tokens_per_s'], 0)} "
            f"| {_f(c['tokens_ratio'], 3)} | {_f(o['cpu_percent'], 1)} |"
        )
    return "\n".join(lines)


def side_table(names: list[str], rows: list[dict[str, Any]]) -> str:
    cols = " | ".join(f"{n}: req / err / CPU % load gen / upstream / others" for n in names)
    lines = [f"| concurrency | {cols} |", "|" + "---|" * (1 + len(names))]
    for row in rows:
        cells = [
            f"{row[n]['requests']:.0f} / {row[n]['errors']:.0f} / "
            f"{_f(row[n]['load_cpu_percent'], 1)} / {_f(row[n]['upstream_cpu_percent'], 1)} / "
            f"{_f(row[n]['others_cpu_percent'], 1)}"
            for n in names
        ]
        lines.append(f"| {row['concurrency']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(name: str, rows: list[dict[str, Any]]) -> tuple[bool, str]:
    at = [r for r in rows if r["concurrency"] == TARGET_CONCURRENCY]
    errors = sum(r[name]["errors"] + r["direct"]["errors"] for r in rows)
    if not at:
        return (
            errors == 0,
            f"not judged (they are for {TARGET_CONCURRENCY} streams); {errors} errors",
        )
    c = at[0][f"{name}_vs_direct"]
    checks = [
        (c["added_ttft_p50_ms"] < TARGET_ADDED_P50_MS, f"added p50 < {TARGET_ADDED_P50_MS:g} ms"),
        (c["added_ttft_p99_ms"] < TARGET_ADDED_P99_MS, f"added p99 < {TARGET_ADDED_P99_MS:g} ms"),
        (c["tokens_ratio"] >= TARGET_RATIO, f"tokens/s ratio ≥ {TARGET_RATIO:g}"),
        (errors == 0, "no errors"),
    ]
    text = ", ".join(f"{label}: {'met' if ok else 'MISSED'}" for ok, label in checks)
    return all(ok for ok, _ in checks), f"at {TARGET_CONCURRENCY} streams, {text}"


def _no_nan(value: Any) -> Any:
    """NaN (no sample) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument("--repeats", type=int, default=2, help="runs per target and point")
    parser.add_argument("--tokens", type=int, default=64, help="chunks per answer (upstream)")
    parser.add_argument("--interval", type=float, default=10.0, help="ms between chunks")
    parser.add_argument("--gateway-url", help="measure this running gateway (no setup)")
    parser.add_argument("--key", help="inference key for --gateway-url")
    parser.add_argument("--model", default="bench", help="served name for --gateway-url")
    parser.add_argument(
        "--upstream-url",
        help="with --gateway-url: the upstream its deployment uses, for the direct side "
        "(default: start a fake upstream on --upstream-port)",
    )
    parser.add_argument("--upstream-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--litellm", action="store_true", help="also LiteLLM, if importable")
    parser.add_argument(
        "--litellm-bin", help="the `litellm` command of a virtualenv of its own (implies --litellm)"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the state dir and logs")
    args = parser.parse_args()
    if args.repeats < 1 or args.seconds <= 0 or args.tokens < 1 or args.interval <= 0:
        parser.error("--repeats, --seconds, --tokens and --interval must be positive")
    if args.upstream_url and not args.gateway_url:
        parser.error("--upstream-url goes with --gateway-url")
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = machine()
    stack = Stack(keep=args.keep)
    stack.make_state_dir()
    try:
        upstream_proc: psutil.Process | None = None
        if args.upstream_url:
            upstream_url = args.upstream_url.rstrip("/")
            upstream_proc = listening_process(upstream_url)
        else:
            proc, upstream_port = start_upstream_process(
                args.upstream_port, args.tokens, args.interval
            )
            stack.adopt(proc)
            upstream_url = f"http://127.0.0.1:{upstream_port}"
            upstream_proc = psutil.Process(proc.pid)
        direct = Target("direct", upstream_url, None, args.model)
        if args.gateway_url:
            url = args.gateway_url.rstrip("/")
            gateway = Target("gateway", url, args.key, args.model, listening_process(url))
            wait_ready(url, args.key, None, timeout=30)
        else:
            assert upstream_proc is not None
            gateway = start_gateway(stack, upstream_port, upstream_proc.pid, args.model)
        # the direct side sends the same Authorization header (the upstream ignores it)
        direct.key = gateway.key
        targets = [direct, gateway]
        litellm_note = ""
        if args.litellm or args.litellm_bin:
            started = start_litellm(stack, upstream_url, args.litellm_bin)
            if isinstance(started, Target):
                targets.append(started)
            else:
                litellm_note = f"LiteLLM: not run ({started})"

        header = [
            "# Gateway added latency",
            "",
            f"Machine: {info['nproc']} CPUs ({info['cpu_model']}), "
            f"{info['memory_gib']} GiB, Linux {info['kernel']}, Python {info['python']}.",
            (
                f"Upstream: given, {upstream_url}"
                if args.upstream_url
                else f"Upstream: fake, {args.tokens} chunks every {args.interval:g} ms "
                f"({1000 / args.interval:.0f} tok/s per stream), {upstream_url}"
            )
            + (f" (pid {upstream_proc.pid})" if upstream_proc else " (CPU not measured)"),
            f"Gateway: {gateway.url}"
            + (f" (pid {gateway.process.pid})" if gateway.process else " (CPU not measured)")
            + (f", state dir {stack.state_dir}" if not args.gateway_url else ""),
            f"Load: {args.seconds:g} s windows after {args.warmup:g} s warm-up, "
            f"{args.repeats} repeats per target, alternating; medians.",
        ]
        print("\n".join(header) + "\n", flush=True)

        processes = {t.name: t.process for t in targets if t.process is not None}
        if upstream_proc is not None:
            processes["upstream"] = upstream_proc
        results: list[dict[str, Any]] = []
        raw: list[dict[str, Any]] = []
        for concurrency in args.concurrency:
            runs: dict[str, list[RunStats]] = {t.name: [] for t in targets}
            for repeat in range(args.repeats):
                order = targets if repeat % 2 == 0 else list(reversed(targets))
                for target in order:
                    stats = measure(target, concurrency, args, processes)
                    runs[target.name].append(stats)
                    raw.append({"target": target.name, "repeat": repeat, **stats.as_dict()})
            row: dict[str, Any] = {"concurrency": concurrency}
            for name, stats_list in runs.items():
                row[name] = summarize(name, stats_list)
            for target in targets[1:]:
                row[f"{target.name}_vs_direct"] = compare(row["direct"], row[target.name])
            results.append(row)

        names = [t.name for t in targets]
        print()
        print("\n".join(header))
        print()
        print(table("gateway", results))
        ok, text = verdict("gateway", results)
        print(f"\nTargets: {text}.")
        if "litellm" in names:
            print()
            print(table("litellm", results))
        elif litellm_note:
            print(f"\n{litellm_note.splitlines()[0]}")
        print(
            "\nRequests, errors, and the CPU of the load generator (this process), the "
            "upstream and everything else on the machine, medians (% of one core):\n"
        )
        print(side_table(names, results))
        busiest = max(row[n]["others_cpu_max"] for row in results for n in names)
        if busiest > OTHERS_WARNING:
            print(
                f"\nWARNING: other processes used up to {busiest:.0f} % of a core during a "
                "window: the machine was shared, the figures are disturbed; rerun when idle."
            )
        if args.out:
            document = {
                "machine": info,
                "config": {
                    k: (str(v) if isinstance(v, Path) else v)
                    for k, v in vars(args).items()
                    if k != "key"
                },
                "upstream_url": upstream_url,
                "gateway_url": gateway.url,
                "targets_met": ok if TARGET_CONCURRENCY in args.concurrency else None,
                "litellm": litellm_note or ("run" if "litellm" in names else "not asked"),
                "results": results,
                "runs": raw,
            }
            args.out.write_text(json.dumps(_no_nan(document), indent=2, default=str) + "\n")
            print(f"\nWrote {args.out}")
        return 0 if ok else 1
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
