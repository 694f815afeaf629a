"""llama-server (``-np 8``, continuous batching) against llama_cpp.server (one request at
a time) under 1, 4 and 8 concurrent clients: aggregate tokens/s and p50 latency.

Both servers are started the way gpufleet starts them (``scheduling.backend.launch``
with ``LaunchSpec(server="llama_server", parallel=8)`` and
``LaunchSpec(server="llama_cpp_python")``) with the same model and the same settings:
n_ctx per slot (``--n-ctx``, 512), ``n_threads`` and ``n_threads_batch`` (``--threads``,
2) through the extra options, batch 512, f16 KV cache, no GPU, and the environment
variable ``OMP_WAIT_POLICY`` (``--omp-wait-policy``, ``passive``: both are built with
OpenMP, whose busy waiting makes an idle server spin, and on a busy 2-core machine
collapses both; ``--omp-wait-policy unset`` leaves it out).

Models (random weights, ``devtools.tiny_gguf.write_tiny_model``, in a temp dir):

- **dense**: llama, 6 layers, n_embd 512, 8 heads (4 KV heads), n_ff 1408, 32 000
  tokens, Q4_0 (about 50 M parameters);
- **moe**: the same with Mixtral-style experts, 8 experts of n_ff 1408, 2 used (about
  141 M parameters, 47 M of them multiplied per token).

Both servers of a model stay loaded for all of its points, so the comparison is side by
side on the same machine at the same time: while one is measured the other waits
(passively, with ``OMP_WAIT_POLICY=passive``; its CPU is reported). For each client
count the servers take turns, the first one alternating from point to point to spread
drift (other work on the machine).

A point: C clients (asyncio, one keep-alive connection each) post ``/v1/completions``
back to back, each with a short prompt of its own (client and request number first, so
no two share a prefix), ``max_tokens`` 64 and the same sampling (temperature 0.8,
top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.0: llama_cpp.server's own default is
1.1). With random weights a completion could end early on an end-of-generation token,
so every request carries ``logit_bias`` −100 for the vocabulary's special tokens
(``<|endoftext|>``, the EOS, and ``<|im_end|>``, which llama.cpp also treats as end of
generation; ``ignore_eos`` is llama-server's only), and every answer is checked:
``usage.completion_tokens`` must equal ``max_tokens``. "Short" counts answers that
ended early (a failure); "over" those with more: llama-cpp-python 0.3.x generates on
past ``max_tokens`` while its text ends inside a UTF-8 character (its ``multibyte_fix``
skips the length check), which random weights emitting byte tokens sometimes hit; those
tokens are real and counted.

Client *i* starts ``i/C`` of one request's duration (a single request's latency,
measured just before) into a warm-up of ``--warmup`` seconds, at least (C + 1)
single-request durations (one whole round of queued requests); then a window of
``--seconds``. Latency: request sent → answer read, p50 over the requests that finish
inside the window. Tokens: each request's completion tokens spread evenly over its
latency and counted for the part inside the window (llama-server's slots tend to finish
together, which would make whole-request counts jump); tokens/s = that ÷ window. When
the window closes no new request is sent and the ones in flight are awaited, so the next
point starts on an idle server. CPU in the window (psutil, % of one core): the measured
server, the idle one, this process (the clients) and everything else on the machine;
and tokens per CPU-second of the measured server, which the other work on a shared
machine changes much less than tokens/s.

Target, at 8 clients: llama-server ≥ 2.5× the tokens/s of llama_cpp.server, and its
p50 latency ≤ a third. Exit status 0 when met for every model without errors or
short answers, 1 otherwise.

Run from the repository root (needs ``llama-server``: ``make install``)::

    .venv/bin/python bench/backends/run.py                      # 30 s per point
    .venv/bin/python bench/backends/run.py --seconds 3 --warmup 2 --json /tmp/b.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import gguf  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from devtools.tiny_gguf import (  # noqa: E402
    SPECIAL_TOKENS,
    TinyModelSpec,
    model_tensors,
    write_tiny_model,
)
from scheduling import backend, backend_logs, llama_server, ports  # noqa: E402
from scheduling.backend import LaunchSpec  # noqa: E402

SERVERS = (backend.LLAMA_CPP_PYTHON, backend.LLAMA_SERVER)
READY_TIMEOUT = 300.0
REQUEST_TIMEOUT = 600.0
TARGET_TOKENS_RATIO = 2.5
TARGET_P50_RATIO = 1 / 3
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}
WORDS = (
    "the river",
    "a small lamp",
    "seven green hills",
    "an old clock",
    "the north wind",
    "paper boats",
    "a quiet street",
    "the last train",
    "winter apples",
    "a long letter",
    "the copper bell",
    "morning fog",
)
DENSE = TinyModelSpec(
    name="bench-dense",
    n_layer=6,
    n_embd=512,
    n_head=8,
    n_head_kv=4,
    n_ff=1408,
    n_vocab=32000,
    n_ctx_train=4096,
    weight_type=gguf.GGMLQuantizationType.Q4_0,
)
MODELS: dict[str, TinyModelSpec] = {
    "dense": DENSE,
    "moe": replace(DENSE, name="bench-moe", n_expert=8, n_expert_used=2),
}


# --- models --------------------------------------------------------------------------


def parameters(spec: TinyModelSpec) -> tuple[int, int]:
    """(all parameters, those one token's forward pass multiplies: token_embd is a
    lookup, and of the experts only ``n_expert_used`` of ``n_expert`` run)."""
    total = active = 0
    for name, ne, _ in model_tensors(spec):
        count = math.prod(ne)
        total += count
        if name == "token_embd.weight":
            continue
        if "_exps." in name:
            count = count * spec.n_expert_used // spec.n_expert
        active += count
    return total, active


def eog_bias(spec: TinyModelSpec) -> dict[str, float]:
    """logit_bias that keeps every completion going: the vocabulary's special tokens
    (the last ones, ``tiny_bpe_vocab``), among them EOS and ``<|im_end|>``."""
    first = spec.n_vocab - len(SPECIAL_TOKENS)
    return {str(token): -100.0 for token in range(first, spec.n_vocab)}


# --- servers -------------------------------------------------------------------------


@dataclass
class Server:
    kind: str
    spec: LaunchSpec
    launched: backend.Launched | None = None

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    @property
    def label(self) -> str:
        if self.kind == backend.LLAMA_SERVER:
            return f"llama-server -np {self.spec.parallel}"
        return "llama_cpp.server"

    def alive(self) -> bool:
        pid = self.launched.server_pid if self.launched else 0
        return backend.is_running(pid, self.spec.instance_id)

    def cpu_seconds(self) -> float:
        if self.launched is None:
            return 0.0
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(self.launched.server_pid).cpu_times()
            return times.user + times.system
        return 0.0

    def stop(self) -> None:
        if self.launched is not None:
            backend.stop(
                self.launched.runner_pid,
                self.launched.server_pid,
                timeout=15,
                instance_id=self.spec.instance_id,
            )
            self.launched = None


def make_spec(
    kind: str, model: Path, work: Path, port: int, args: argparse.Namespace
) -> LaunchSpec:
    threads = str(args.threads)
    name = f"{model.stem}-{kind}"
    return LaunchSpec(
        instance_id=f"bench-backends-{uuid.uuid4()}",
        model_path=model,
        port=port,
        log_path=work / name / "server.log",
        state_dir=work / name / "state",
        served_name="bench",
        n_ctx=args.n_ctx,
        cuda_visible_devices="",
        extra_options={"n_threads": threads, "n_threads_batch": threads},
        server=kind,
        parallel=args.parallel if kind == backend.LLAMA_SERVER else 1,
        executable=args.llama_server,
        flash_attn=args.flash_attn,
    )


def server_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if args.omp_wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    return env


def start(servers: list[Server], env: dict[str, str]) -> None:
    """Launch all, then wait until each is ready (they load at the same time)."""
    for server in servers:
        server.launched = backend.launch(server.spec, env=env)
    for server in servers:
        assert server.launched is not None
        ready = backend.wait_ready(
            server.spec.host,
            server.spec.port,
            READY_TIMEOUT,
            server.alive,
            server_pid=server.launched.server_pid,
            path=server.spec.ready_path,
        )
        if not ready:
            tail = " | ".join(backend_logs.tail(server.spec.log_path, lines=15))
            raise SystemExit(f"{server.label} did not become ready: {tail}")


# --- load ----------------------------------------------------------------------------


@dataclass
class Request:
    started: float
    finished: float
    tokens: int

    @property
    def latency(self) -> float:
        return self.finished - self.started


@dataclass
class Load:
    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    short: int = 0  # answers with fewer completion tokens than max_tokens (ended early)
    over: int = 0  # with more (llama-cpp-python, see the module's docstring)
    wrong: list[str] = field(default_factory=list)  # the first few of either


def body(
    client: int, number: int, args: argparse.Namespace, bias: dict[str, float]
) -> dict[str, Any]:
    words = WORDS[(client * 5 + number) % len(WORDS)]
    return {
        "model": "bench",
        "prompt": f"{client}.{number}: Tell me a story about {words} and {WORDS[number % 12]}.",
        "max_tokens": args.max_tokens,
        "logit_bias": bias,
        "stream": False,
        **SAMPLING,
    }


async def one_client(
    url: str,
    client: int,
    delay: float,
    until: float,
    args: argparse.Namespace,
    bias: dict[str, float],
    load: Load,
) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=url, timeout=REQUEST_TIMEOUT, limits=limits, trust_env=False
    ) as http:
        await asyncio.sleep(delay)
        number = 0
        while time.perf_counter() < until:
            payload = body(client, number, args, bias)
            number += 1
            started = time.perf_counter()
            try:
                response = await http.post("/v1/completions", json=payload)
            except httpx.HTTPError as error:
                load.errors.append(f"{type(error).__name__}: {error}")
                await asyncio.sleep(0.1)
                continue
            finished = time.perf_counter()
            if response.status_code != 200:
                load.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                continue
            answer = response.json()
            tokens = int(answer["usage"]["completion_tokens"])
            if tokens != args.max_tokens:
                if tokens < args.max_tokens:
                    load.short += 1
                else:
                    load.over += 1
                if len(load.wrong) < 5:
                    choice = (answer.get("choices") or [{}])[0]
                    load.wrong.append(
                        f"{tokens} tokens, finish_reason {choice.get('finish_reason')!r}, "
                        f"text {str(choice.get('text'))[-80:]!r}"
                    )
            load.requests.append(Request(started, finished, tokens))


CpuSample = tuple[float, float, float, float]  # measured, idle, this process, machine busy


def cpu_sample(server: Server, idle: Server) -> CpuSample:
    own = psutil.Process().cpu_times()
    return (server.cpu_seconds(), idle.cpu_seconds(), own.user + own.system, busy_cpu_seconds())


async def drive(
    server: Server,
    idle: Server,
    clients: int,
    stagger: float,
    args: argparse.Namespace,
    bias: dict[str, float],
) -> tuple[Load, float, float, CpuSample]:
    """Run the clients; returns (load, window start, window end, CPU seconds used in the
    window). Requests keep going until the window closes; those in flight then are
    awaited, not cut."""
    load = Load()
    begin = time.perf_counter()
    # at least one whole round: llama_cpp.server's first requests queue behind each other
    window_start = begin + max(args.warmup, (clients + 1) * stagger)
    window_end = window_start + args.seconds
    tasks = [
        one_client(server.url, i, stagger * i / clients, window_end, args, bias, load)
        for i in range(clients)
    ]
    running = asyncio.gather(*tasks)
    running.add_done_callback(_retrieved)  # interrupted: no "never retrieved" noise
    await asyncio.sleep(window_start - time.perf_counter())
    before = cpu_sample(server, idle)
    await asyncio.sleep(window_end - time.perf_counter())
    after = cpu_sample(server, idle)
    await running
    used = (
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        after[3] - before[3],
    )
    return load, window_start, window_end, used


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def busy_cpu_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def percentile(values: list[float], fraction: float) -> float:
    return float(np.percentile(values, fraction * 100)) if values else math.nan


def in_window(request: Request, start: float, end: float) -> float:
    """The request's completion tokens that fall inside [start, end], its tokens spread
    evenly over its latency (whole requests would make bursty counts: llama-server's
    slots tend to finish together)."""
    overlap = min(request.finished, end) - max(request.started, start)
    if overlap <= 0:
        return 0.0
    return request.tokens * overlap / max(request.latency, 1e-9)


@dataclass
class Point:
    model: str
    server: str
    label: str
    clients: int
    seconds: float
    requests: int  # finished inside the window (the latencies)
    tokens: float  # completion tokens inside the window, pro rata
    tokens_per_s: float
    tokens_per_cpu_s: float  # tokens ÷ the measured server's CPU seconds in the window
    p50_s: float
    p90_s: float
    max_s: float
    errors: int
    short: int  # answers that ended before max_tokens
    over: int  # answers with more than max_tokens
    server_cpu: float  # % of one core over the window
    idle_server_cpu: float
    client_cpu: float
    others_cpu: float
    stagger_s: float
    latencies: list[float]
    first_errors: list[str]
    wrong: list[str]


def measure(
    model: str,
    server: Server,
    idle: Server,
    clients: int,
    stagger: float,
    args: argparse.Namespace,
    bias: dict[str, float],
) -> Point:
    load, start, end, used = asyncio.run(drive(server, idle, clients, stagger, args, bias))
    seconds = end - start
    server_s, idle_s, client_s, busy_s = used
    counted = [r for r in load.requests if start <= r.finished <= end]
    latencies = sorted(r.latency for r in counted)
    tokens = sum(in_window(r, start, end) for r in load.requests)
    return Point(
        model=model,
        server=server.kind,
        label=server.label,
        clients=clients,
        seconds=seconds,
        requests=len(counted),
        tokens=tokens,
        tokens_per_s=tokens / seconds,
        tokens_per_cpu_s=tokens / server_s if server_s > 0 else math.nan,
        p50_s=percentile(latencies, 0.5),
        p90_s=percentile(latencies, 0.9),
        max_s=max(latencies, default=math.nan),
        errors=len(load.errors),
        short=load.short,
        over=load.over,
        server_cpu=server_s / seconds * 100,
        idle_server_cpu=idle_s / seconds * 100,
        client_cpu=client_s / seconds * 100,
        others_cpu=(busy_s - server_s - idle_s - client_s) / seconds * 100,
        stagger_s=stagger,
        latencies=latencies,
        first_errors=load.errors[:5],
        wrong=load.wrong,
    )


def single_request(server: Server, args: argparse.Namespace, bias: dict[str, float]) -> float:
    """One untimed-for-the-table request (warms the server up, checks the token count);
    returns its latency, the stagger of the clients' starts."""
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT, trust_env=False) as http:
        started = time.perf_counter()
        response = http.post("/v1/completions", json=body(99, 0, args, bias))
        latency = time.perf_counter() - started
    response.raise_for_status()
    tokens = response.json()["usage"]["completion_tokens"]
    if tokens != args.max_tokens:
        raise SystemExit(f"{server.label}: {tokens} completion tokens, not {args.max_tokens}")
    return latency


# --- report --------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model or platform.processor() or "unknown",
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "llama_cpp_python": _version("llama_cpp"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except Exception:  # only for the report
        return "?"


def llama_server_version(executable: Path | None) -> str:
    path = executable or llama_server.binary()
    if path is None:
        return "not installed"
    try:
        done = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as error:
        return f"? ({error})"
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "version" in line]
    return lines[0].strip() if lines else "?"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def pairs(model: str, points: list[Point]) -> Iterator[tuple[int, Point, Point]]:
    """(clients, llama_cpp.server's point, llama-server's point) of a model."""
    by = {(p.server, p.clients): p for p in points if p.model == model}
    for clients in sorted({p.clients for p in points if p.model == model}):
        old = by.get((backend.LLAMA_CPP_PYTHON, clients))
        new = by.get((backend.LLAMA_SERVER, clients))
        if old is not None and new is not None:
            yield clients, old, new


def table(model: str, points: list[Point], parallel: int) -> tuple[list[str], bool | None]:
    """The model's markdown table, and whether the targets are met at 8 clients."""
    lines = [
        f"| clients | llama_cpp.server tok/s (p50 s) | llama-server -np {parallel} tok/s "
        "(p50 s) | ratio tok/s | ratio p50 |",
        "|---:|---:|---:|---:|---:|",
    ]
    met: bool | None = None
    for clients, old, new in pairs(model, points):
        tok = ratio(new.tokens_per_s, old.tokens_per_s)
        lat = ratio(new.p50_s, old.p50_s)
        lines.append(
            f"| {clients} | {old.tokens_per_s:.1f} ({old.p50_s:.2f}) "
            f"| {new.tokens_per_s:.1f} ({new.p50_s:.2f}) | {tok:.2f}× | {lat:.2f}× |"
        )
        if clients == 8:
            met = tok >= TARGET_TOKENS_RATIO and lat <= TARGET_P50_RATIO
    return lines, met


def efficiency(model: str, points: list[Point], parallel: int) -> list[str]:
    """Tokens per CPU-second of the measured server: what it would do with the cores to
    itself (the other work on a shared machine changes tok/s, much less this)."""
    lines = [
        f"| clients | llama_cpp.server tok/CPU-s (CPU %) | llama-server -np {parallel} "
        "tok/CPU-s (CPU %) | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for clients, old, new in pairs(model, points):
        lines.append(
            f"| {clients} | {old.tokens_per_cpu_s:.1f} ({old.server_cpu:.0f}) "
            f"| {new.tokens_per_cpu_s:.1f} ({new.server_cpu:.0f}) "
            f"| {ratio(new.tokens_per_cpu_s, old.tokens_per_cpu_s):.2f}× |"
        )
    return lines


def detail(points: list[Point]) -> list[str]:
    lines = [
        "| model | clients | server | requests | tok/s | p50 s | p90 s | max s | tok/CPU-s "
        "| server CPU % | idle server CPU % | clients CPU % | others CPU % | errors "
        "| short / over |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p.model} | {p.clients} | {p.label} | {p.requests} | {p.tokens_per_s:.1f} "
            f"| {p.p50_s:.2f} | {p.p90_s:.2f} | {p.max_s:.2f} | {p.tokens_per_cpu_s:.1f} "
            f"| {p.server_cpu:.0f} | {p.idle_server_cpu:.1f} | {p.client_cpu:.1f} "
            f"| {p.others_cpu:.0f} | {p.errors} | {p.short} / {p.over} |"
        )
    return lines


# --- main ----------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def order(index: int) -> tuple[str, str]:
    return SERVERS if index % 2 == 0 else (SERVERS[1], SERVERS[0])


def points_of(args: argparse.Namespace) -> Iterator[tuple[int, str, int]]:
    index = 0
    for model in args.models:
        for clients in args.clients:
            yield index, model, clients
            index += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="window per point")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before a window")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--n-ctx", type=int, default=512, help="per slot")
    parser.add_argument("--parallel", type=int, default=8, help="llama-server's slots")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--flash-attn", action="store_true", help="flash attention on for both servers"
    )
    parser.add_argument(
        "--omp-wait-policy", default="passive", help="passive, active, or unset (left out)"
    )
    parser.add_argument("--llama-server", type=Path, default=None, help="binary to run")
    parser.add_argument("--port", type=int, default=24100, help="first port to try")
    parser.add_argument("--json", type=Path, default=None, help="save the raw figures")
    parser.add_argument("--keep", action="store_true", help="keep the models and logs")
    args = parser.parse_args(argv)
    if (args.llama_server or llama_server.binary()) is None:
        raise SystemExit("llama-server is not installed (make install) or give --llama-server")
    signal.signal(signal.SIGTERM, _interrupt)

    info = machine()
    info["llama_server"] = llama_server_version(args.llama_server)
    omp = args.omp_wait_policy
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}, Python {info['python']}, load average {info['loadavg_start']}"
    )
    print(f"llama-cpp-python {info['llama_cpp_python']}; llama-server: {info['llama_server']}")
    print(
        f"settings: threads {args.threads} (n_threads and n_threads_batch), "
        f"OMP_WAIT_POLICY={omp}, n_ctx {args.n_ctx} per slot, llama-server -np "
        f"{args.parallel}, max_tokens {args.max_tokens}, {args.seconds:g} s windows "
        f"after ≥ {args.warmup:g} s warm-up",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    points: list[Point] = []
    models: dict[str, dict[str, Any]] = {}
    servers: dict[str, list[Server]] = {}
    try:
        for name in args.models:
            spec = MODELS[name]
            started = time.perf_counter()
            (path,) = write_tiny_model(work / f"{name}.gguf", spec)
            total, active = parameters(spec)
            models[name] = {
                "spec": {k: str(v) for k, v in asdict(spec).items()},
                "parameters": total,
                "active_per_token": active,
                "file_mib": round(path.stat().st_size / 2**20, 1),
            }
            print(
                f"model {name}: {total / 1e6:.1f} M parameters ({active / 1e6:.1f} M multiplied "
                f"per token), {models[name]['file_mib']} MiB, written in "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
        env = server_env(args)
        for index, name, clients in points_of(args):
            if name not in servers:
                for other in servers.values():  # one model's pair at a time
                    for server in other:
                        server.stop()
                taken: set[int] = set()
                pair = []
                for kind in SERVERS:
                    port = ports.free_port(args.port, args.port + 1000, taken)
                    assert port is not None, "no free port"
                    taken.add(port)
                    pair.append(
                        Server(kind, make_spec(kind, work / f"{name}.gguf", work, port, args))
                    )
                servers[name] = pair
                started = time.perf_counter()
                start(pair, env)
                print(f"{name}: both servers ready in {time.perf_counter() - started:.1f} s")
            pair = servers[name]
            by_kind = {server.kind: server for server in pair}
            bias = eog_bias(MODELS[name])
            for kind in order(index):
                server = by_kind[kind]
                idle = by_kind[SERVERS[1] if kind == SERVERS[0] else SERVERS[0]]
                stagger = single_request(server, args, bias)
                point = measure(name, server, idle, clients, stagger, args, bias)
                points.append(point)
                print(
                    f"{name} {clients} clients {point.label:>20}: {point.tokens_per_s:7.1f} tok/s, "
                    f"p50 {point.p50_s:6.2f} s, {point.requests:4d} requests, "
                    f"{point.tokens_per_cpu_s:6.1f} tok/CPU-s, "
                    f"server {point.server_cpu:3.0f} %, idle one {point.idle_server_cpu:4.1f} %, "
                    f"others {point.others_cpu:3.0f} %, errors {point.errors}, "
                    f"short / over {point.short} / {point.over}",
                    flush=True,
                )
    finally:
        for pair in servers.values():
            for server in pair:
                server.stop()
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(
        f"machine: nproc {info['nproc']}, {info['cpu_model']}; threads {args.threads}, "
        f"OMP_WAIT_POLICY={omp}; n_ctx {args.n_ctx} per slot; {args.max_tokens}-token "
        f"completions; {args.seconds:g} s per point"
    )
    all_met = True
    verdicts: dict[str, bool | None] = {}
    for name in args.models:
        total = models[name]["parameters"]
        print()
        print(f"**{name}** ({total / 1e6:.1f} M parameters, Q4_0):")
        print()
        lines, met = table(name, points, args.parallel)
        print("\n".join(lines))
        verdicts[name] = met
        if met is None:
            print("(no 8-client point: targets not checked)")
        else:
            print(
                f"target at 8 clients (tok/s ≥ {TARGET_TOKENS_RATIO}×, p50 ≤ 1/3): "
                f"{'met' if met else 'NOT met'}"
            )
        all_met = all_met and bool(met)
        print()
        print("\n".join(efficiency(name, points, args.parallel)))
    print()
    print("\n".join(detail(points)))
    bad = sum(p.errors + p.short for p in points)
    if bad or any(p.over for p in points):
        print("\nerrors, and answers without exactly max_tokens completion tokens:")
        for p in points:
            for line in p.first_errors + p.wrong:
                print(f"  {p.model} {p.clients} clients {p.label}: {line}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "settings": {k: str(v) for k, v in vars(args).items()},
                    "sampling": SAMPLING,
                    "models": models,
                    "targets_met": verdicts,
                    "points": [asdict(p) for p in points],
                },
                indent=1,
            )
        )
        print(f"saved {args.json}")
    return 0 if all_met and not bad else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
