"""Benchmark of the live GPU overview: web CPU and sample-to-browser latency.

A simulated fleet (default 8 nodes x 8 A100-80GB, one tick per second per node) feeds
the fleet websocket of one daphne process, watched by 50 websocket clients. Over a
fixed window it measures

* the web (daphne) process's CPU: (user + system) time delta / wall time, as % of one
  core, plus the median / p95 / max of the per-second figures;
* sample-to-browser latency of every GPU row received: receive time minus the row's
  ``data-sampled`` (p50, p95, p99, max);
* for context: the agents' CPU, this process's CPU (the 50 clients), how busy the
  whole machine was, and the database size afterwards.

Targets: web CPU < 25 % of one core up to 64 GPUs, < 50 % for larger fleets (200
nodes x 8 GPUs: ``--nodes 200``); latency p95 < 1.5 s.

A large fleet is simulated by ``--feeders`` processes driving many nodes each
(``feeder.py``) instead of one agent process per node, and each client shows
``--expanded`` nodes expanded (random, per client; the rest collapsed to their
one-line summary), as a browser on a 1,600-GPU overview would.

Modes: ``embedded`` (temporary SQLite, events through the LiveEvent outbox polled by
the web process) and ``cluster`` (a fresh PostgreSQL database that is dropped again,
events through channels-redis on ``--redis-url``; nothing in Redis is flushed).

Run from the repository root::

    .venv/bin/python bench/telemetry/run.py --mode embedded --duration 60 --json out.json

Everything it starts listens on 127.0.0.1 only and is stopped at the end, also on
Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from clients import Collector, Target, run_client, stop_clients, wait_connected
from stack import Stack, free_port

SERVICE_NAMES = frozenset({"postgres", "redis-server"})
WEB_CPU_TARGET = 25.0  # % of one core, fleets up to 64 GPUs
WEB_CPU_TARGET_LARGE = 50.0  # % of one core, larger fleets (issue 13: 200 nodes x 8 GPUs)
P95_TARGET = 1.5  # seconds
CONNECT_WAVE = 10  # clients that connect at once
AUTO_OPEN_UP_TO = 8  # inventory.fleet_view: up to this many nodes all are expanded


@dataclass
class Options:
    mode: str
    duration: float
    warmup: float
    clients: int
    nodes: int
    gpus_per_node: int
    gpu_model: str
    postgres_url: str
    redis_url: str
    json_path: Path | None
    keep: bool
    repeat: int
    feeders: int
    expanded: int
    seed: int

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def expanded_nodes(self) -> int:
        """Nodes each client shows expanded (every node of a small fleet)."""
        return self.nodes if self.nodes <= AUTO_OPEN_UP_TO else min(self.expanded, self.nodes)

    @property
    def cpu_target(self) -> float:
        return WEB_CPU_TARGET if self.gpus <= 64 else WEB_CPU_TARGET_LARGE


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("embedded", "cluster"), default="embedded")
    parser.add_argument("--duration", type=float, default=60.0, help="window, seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="after clients connect")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--gpu-model", default="A100-80GB")
    parser.add_argument(
        "--postgres-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="cluster mode: server where a fresh database is created and dropped",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp state dir (logs)")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh stack")
    parser.add_argument(
        "--feeders",
        type=int,
        default=None,
        help="processes driving the nodes (feeder.py); 0: one agent per node "
        "(default: 0 up to 16 nodes, else 2)",
    )
    parser.add_argument(
        "--expanded", type=int, default=8, help="nodes each client expands (> 8 nodes)"
    )
    parser.add_argument("--seed", type=int, default=1, help="which nodes clients expand")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 1000 and 1 <= args.nodes <= 400 and args.duration > 0):
        parser.error("clients 1..1000, nodes 1..400, duration > 0")
    feeders = args.feeders if args.feeders is not None else (0 if args.nodes <= 16 else 2)
    if not 0 <= feeders <= 16 or args.expanded < 0:
        parser.error("feeders 0..16, expanded >= 0")
    if not 1 <= args.repeat <= 20:
        parser.error("repeat 1..20")
    return Options(
        mode=args.mode,
        duration=args.duration,
        warmup=args.warmup,
        clients=args.clients,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        gpu_model=args.gpu_model,
        postgres_url=args.postgres_url,
        redis_url=args.redis_url,
        json_path=args.json,
        keep=args.keep,
        repeat=args.repeat,
        feeders=feeders,
        expanded=args.expanded,
        seed=args.seed,
    )


# --- CPU accounting ------------------------------------------------------------------


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def service_cpu_seconds() -> dict[int, float]:
    """CPU of every PostgreSQL and Redis process, with what the postmaster's exited
    children (short-lived connection backends) used; all of them on this machine."""
    totals: dict[int, float] = {}
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] not in SERVICE_NAMES:
            continue
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            used = times.user + times.system + times.children_user + times.children_system
            totals[proc.pid] = float(used)
    return totals


@dataclass
class Snapshot:
    wall: float
    web: float
    agents: list[float]
    me: float
    services: dict[int, float]
    machine: Any

    @classmethod
    def take(cls, web: psutil.Process, agents: list[psutil.Process]) -> Snapshot:
        return cls(
            wall=time.monotonic(),
            web=cpu_seconds(web),
            agents=[cpu_seconds(a) for a in agents],
            me=cpu_seconds(psutil.Process()),
            services=service_cpu_seconds(),
            machine=psutil.cpu_times(),
        )


@dataclass
class CpuUsage:
    """All figures in % of one core, except ``machine_busy_pct`` (% of all cores)."""

    wall_seconds: float
    web_pct: float
    web_per_second_pct: list[float]
    rerender_seconds: list[bool]  # per second: did a whole-fleet message arrive?
    agents_pct: float
    agent_max_pct: float
    clients_pct: float
    services_pct: float
    machine_busy_pct: float
    machine_steal_pct: float
    others_pct: float


def usage_between(
    a: Snapshot, b: Snapshot, per_second: list[float], rerender: list[bool]
) -> CpuUsage:
    wall = b.wall - a.wall
    agents = [after - before for before, after in zip(a.agents, b.agents, strict=True)]
    total = sum(b.machine) - sum(a.machine)
    idle = (b.machine.idle + b.machine.iowait) - (a.machine.idle + a.machine.iowait)
    steal = getattr(b.machine, "steal", 0.0) - getattr(a.machine, "steal", 0.0)
    services = sum(used - a.services.get(pid, 0.0) for pid, used in b.services.items())
    ours = (b.web - a.web) + sum(agents) + (b.me - a.me) + services
    return CpuUsage(
        wall_seconds=wall,
        web_pct=100 * (b.web - a.web) / wall,
        web_per_second_pct=per_second,
        rerender_seconds=rerender,
        agents_pct=100 * sum(agents) / wall,
        agent_max_pct=100 * max(agents, default=0.0) / wall,
        clients_pct=100 * (b.me - a.me) / wall,
        services_pct=100 * services / wall,
        machine_busy_pct=100 * (total - idle) / total if total else 0.0,
        machine_steal_pct=100 * steal / total if total else 0.0,
        others_pct=100 * (total - idle - ours) / wall,  # cpu_times() sums all cores
    )


async def meter_window(
    duration: float, web: psutil.Process, agents: list[psutil.Process], collector: Collector
) -> CpuUsage:
    start = Snapshot.take(web, agents)
    per_second: list[float] = []
    rerender: list[bool] = []
    last_wall, last_web, last_other = start.wall, start.web, collector.other_messages
    end = start.wall + duration
    while (now := time.monotonic()) < end:
        await asyncio.sleep(min(1.0, end - now))
        wall, web_cpu = time.monotonic(), cpu_seconds(web)
        if wall - last_wall >= 0.5:
            per_second.append(100 * (web_cpu - last_web) / (wall - last_wall))
            rerender.append(collector.other_messages > last_other)
            last_wall, last_web, last_other = wall, web_cpu, collector.other_messages
    return usage_between(start, Snapshot.take(web, agents), per_second, rerender)


def split_by_rerender(cpu: CpuUsage) -> tuple[float, float, int]:
    """Mean web CPU of the seconds with and without whole-fleet messages, and how many
    seconds had one."""
    pairs = list(zip(cpu.web_per_second_pct, cpu.rerender_seconds, strict=True))
    with_ = [pct for pct, flag in pairs if flag]
    without = [pct for pct, flag in pairs if not flag]
    mean = statistics.fmean
    return (mean(with_) if with_ else math.nan, mean(without) if without else math.nan, len(with_))


# --- the measurement -----------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


@dataclass
class Result:
    cpu: CpuUsage
    connect_seconds: float
    resync_bytes: int
    rows: int
    rows_expected: int
    node_messages: int
    other_messages: int
    other_bytes: int
    foreign_messages: int
    mean_message_bytes: float
    closed_during_window: list[str]
    messages: int = 0
    bytes_per_client_second: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)
    line_latency: dict[str, float] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    feeders: list[dict[str, Any]] = field(default_factory=list)


async def measure(
    opts: Options,
    target: Target,
    node_ids: list[str],
    web: psutil.Process,
    agents: list[psutil.Process],
) -> Result:
    collector = Collector(node_ids=frozenset(node_ids))
    cookies = nodes_cookies(opts, node_ids)
    tasks: list[asyncio.Task[None]] = []
    try:
        started = time.monotonic()
        # In waves, as browsers arrive: 50 resyncs of a 1,600-GPU page at once on a busy
        # 2-core machine hold up handshakes past daphne's 5 s timeout.
        for first in range(0, len(cookies), CONNECT_WAVE):
            wave = cookies[first : first + CONNECT_WAVE]
            tasks += [asyncio.create_task(run_client(target, collector, c)) for c in wave]
            await wait_connected(collector, tasks, timeout=180)
        connect_seconds = time.monotonic() - started
        await asyncio.sleep(opts.warmup)
        collector.measuring = True
        cpu = await meter_window(opts.duration, web, agents, collector)
        collector.measuring = False
    finally:
        await stop_clients(tasks)
    latencies = sorted(collector.latencies)
    wall = cpu.wall_seconds
    return Result(
        cpu=cpu,
        connect_seconds=connect_seconds,
        resync_bytes=collector.resync_bytes,
        rows=len(latencies),
        rows_expected=round(opts.clients * opts.expanded_nodes * opts.gpus_per_node * wall),
        node_messages=collector.node_messages,
        other_messages=collector.other_messages,
        other_bytes=collector.other_bytes,
        foreign_messages=collector.foreign_messages,
        mean_message_bytes=collector.message_bytes / max(1, collector.messages),
        closed_during_window=collector.closed,
        messages=collector.messages,
        bytes_per_client_second=collector.message_bytes / opts.clients / wall,
        latency=latency_figures(latencies),
        line_latency=latency_figures(sorted(collector.line_latencies)),
    )


def latency_figures(ordered: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else math.nan,
        "mean": statistics.fmean(ordered) if ordered else math.nan,
    }


def nodes_cookies(opts: Options, node_ids: list[str]) -> list[str]:
    """Each client's ``gf_nodes`` cookie: ``--expanded`` random nodes expanded, the rest
    collapsed (none for a small fleet, where every node is expanded anyway)."""
    if opts.nodes <= AUTO_OPEN_UP_TO:
        return [""] * opts.clients
    rng = random.Random(opts.seed)
    shorts = [node_id.replace("-", "")[:12] for node_id in node_ids]
    return [
        "closed:" + ".".join(rng.sample(shorts, opts.expanded_nodes)) for _ in range(opts.clients)
    ]


def run(opts: Options) -> Result:
    spec = f"{opts.gpus_per_node}x{opts.gpu_model}"
    with Stack(opts.mode, spec, opts.postgres_url, opts.redis_url, opts.keep) as stack:
        print(f"state dir {stack.state_dir}; mode {opts.mode}", flush=True)
        try:
            stack.prepare_database()
            session_key = stack.helper("session")["session_key"]
            port = free_port()
            web = stack.start_web(port)
            if opts.feeders:
                spec = f"{opts.gpus_per_node}x{opts.gpu_model}"
                agents = stack.start_feeders(opts.nodes, opts.feeders, spec)
            else:
                agents = stack.start_agents(opts.nodes)
            within = 60.0 if opts.feeders else 5.0  # feeders write the GPU rows every 30 s
            node_ids = stack.wait_sampled(opts.gpus, timeout=180, within=within)
            print(
                f"{len(node_ids)} nodes, {opts.gpus} GPUs sampled; connecting "
                f"{opts.clients} clients to 127.0.0.1:{port}",
                flush=True,
            )
            target = Target(
                f"ws://127.0.0.1:{port}/ws/fleet/", f"http://127.0.0.1:{port}", session_key
            )
            result = asyncio.run(measure(opts, target, node_ids, web, agents))
            result.feeders = stack.stop_agents()
            result.after = stack.helper("stats")
        except Exception:
            for name in ("daphne", "agent-bench-0", "feeder-0"):
                tail = stack.log_tail(name)
                if tail:
                    print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)
            raise
    return result


# --- reporting -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _mib(value: Any) -> str:
    return f"{(value or 0) / 1024**2:.1f} MiB"


def report(opts: Options, result: Result) -> str:
    cpu, lat, after = result.cpu, result.latency, result.after
    per_second = sorted(cpu.web_per_second_pct)
    rerendered, plain, seconds_rerendered = split_by_rerender(cpu)
    target = opts.cpu_target
    ok_cpu = "OK" if cpu.web_pct < target else "MISSED"
    line = result.line_latency
    ok_lat = "OK" if lat["p95"] < P95_TARGET else "MISSED"
    delivered = 100 * result.rows / max(1, result.rows_expected)
    rows: list[tuple[str, str, str]] = [
        ("web CPU, % of one core", f"{cpu.web_pct:.1f}", f"< {target:.0f}  {ok_cpu}"),
        (
            "  per second: median / p95 / max",
            f"{percentile(per_second, 50):.1f} / {percentile(per_second, 95):.1f} / "
            f"{max(per_second, default=math.nan):.1f}",
            "",
        ),
        (
            "  seconds with / without re-render",
            f"{rerendered:.1f} / {plain:.1f} ({seconds_rerendered} s with)",
            "",
        ),
        (
            "latency p50 / p95, s",
            f"{lat['p50']:.3f} / {lat['p95']:.3f}",
            f"p95 < {P95_TARGET}  {ok_lat}",
        ),
        (
            "latency p99 / max / mean, s",
            f"{lat['p99']:.3f} / {lat['max']:.3f} / {lat['mean']:.3f}",
            "",
        ),
        (
            "GPU rows received / expected",
            f"{result.rows} / {result.rows_expected} ({delivered:.1f}%)",
            "",
        ),
        (
            "node lines: latency p50 / p95, s",
            f"{line.get('p50', math.nan):.3f} / {line.get('p95', math.nan):.3f}",
            "",
        ),
        (
            "messages x mean size; per client",
            f"{result.messages} x {result.mean_message_bytes:,.0f} B; "
            f"{result.bytes_per_client_second / 1024:,.1f} KiB/s",
            "",
        ),
        ("GPU row fragments (one node each)", f"{result.node_messages}", ""),
        (
            "other (size) / foreign messages",
            f"{result.other_messages} ({result.other_bytes:,} B) / {result.foreign_messages}",
            "",
        ),
        (
            "clients connected in (resync size)",
            f"{result.connect_seconds:.1f} s ({result.resync_bytes:,} B)",
            "",
        ),
        ("agents CPU all / busiest, % core", f"{cpu.agents_pct:.1f} / {cpu.agent_max_pct:.1f}", ""),
        ("clients (this process) CPU, % core", f"{cpu.clients_pct:.1f}", ""),
        ("PostgreSQL + Redis CPU, % core", f"{cpu.services_pct:.1f}", ""),
        (
            "machine busy / steal, % all cores",
            f"{cpu.machine_busy_pct:.1f} / {cpu.machine_steal_pct:.1f}",
            "",
        ),
        ("everything else on the machine, % core", f"{cpu.others_pct:.1f}", ""),
        (
            "database after run",
            f"{_mib(after.get('database_bytes'))} ({after.get('gpu_samples')} samples, "
            f"{after.get('live_events')} outbox rows)",
            "",
        ),
    ]
    head = (
        f"mode {opts.mode}: {opts.nodes} nodes x {opts.gpus_per_node} {opts.gpu_model} at 1 Hz, "
        f"{opts.clients} websocket clients ({opts.expanded_nodes} nodes expanded each), "
        f"{cpu.wall_seconds:.1f} s window"
    )
    lines = [head, f"{'metric':<40}{'value':<40}target"]
    lines += [f"{name:<40}{value:<40}{target}".rstrip() for name, value, target in rows]
    for index, fed in enumerate(result.feeders):
        lines.append(
            f"feeder {index}: {fed['ticks']} node ticks, {fed['late_ticks']} late "
            f"(p95 {fed['late_p95_s']:.3f} s), {fed['errors']} errors"
        )
    if result.closed_during_window:
        lines.append(f"closed during window: {result.closed_during_window[:5]}")
    return "\n".join(lines)


def summary(results: list[Result]) -> dict[str, float]:
    """Medians over the runs of the headline figures."""
    return {
        "web_cpu_pct": statistics.median(r.cpu.web_pct for r in results),
        "latency_p50_s": statistics.median(r.latency["p50"] for r in results),
        "latency_p95_s": statistics.median(r.latency["p95"] for r in results),
        "line_latency_p95_s": statistics.median(
            r.line_latency.get("p95", math.nan) for r in results
        ),
        "agents_cpu_pct": statistics.median(r.cpu.agents_pct for r in results),
        "services_cpu_pct": statistics.median(r.cpu.services_pct for r in results),
        "web_cpu_rerender_seconds_pct": statistics.median(
            split_by_rerender(r.cpu)[0] for r in results
        ),
        "web_cpu_other_seconds_pct": statistics.median(
            split_by_rerender(r.cpu)[1] for r in results
        ),
        "others_cpu_pct": statistics.median(r.cpu.others_pct for r in results),
    }


def write_json(opts: Options, results: list[Result]) -> None:
    assert opts.json_path is not None
    payload = {
        "benchmark": "telemetry",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "machine": machine(),
        "options": asdict(opts) | {"json_path": str(opts.json_path)},
        "targets": {"web_cpu_pct": opts.cpu_target, "latency_p95_s": P95_TARGET},
        "summary": summary(results),
        "runs": [asdict(result) for result in results],
    }
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    opts.json_path.write_text(json.dumps(payload, indent=2) + "\n")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(
        signal.SIGINT, signal.default_int_handler
    )  # also when started with SIGINT ignored
    results: list[Result] = []
    try:
        for number in range(1, opts.repeat + 1):
            print(f"run {number}/{opts.repeat}", flush=True)
            results.append(run(opts))
            print(report(opts, results[-1]), flush=True)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    medians = summary(results)
    if len(results) > 1:
        figures = ", ".join(f"{key} {value:.3f}" for key, value in medians.items())
        print(f"medians over {len(results)} runs: {figures}")
    if opts.json_path is not None:
        write_json(opts, results)
        print(f"wrote {opts.json_path}")
    ok = medians["web_cpu_pct"] < opts.cpu_target and medians["latency_p95_s"] < P95_TARGET
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
