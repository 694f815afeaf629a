"""Load generator: C concurrent clients streaming chat completions back to back.

Every client (one asyncio task with its own ``httpx.AsyncClient`` and one keep-alive
connection) sends ``POST {base}/v1/chat/completions`` with ``"stream": true`` and
``stream_options.include_usage`` again and again until the window closes, with an
optional ``Authorization: Bearer`` key. A run is ``warmup`` seconds (connections open,
nothing recorded) then a window of ``seconds``. Client *i* of C starts
``i/C × stagger`` seconds into the warm-up (stagger ≤ warm-up; best: one request's
duration): started together, equal-length requests would stay in lockstep and the
first tokens of all C streams would arrive in the same millisecond, which measures a
burst, not a load.

Per request started inside the window it records the time to first token (TTFT: the
first ``data:`` chunk whose delta has content, from just before the request is sent),
the total time and the chunks received; requests still streaming when the window
closes are finished (their TTFT counts) but only tokens that arrived inside the window
count for tokens/s.

Per run: TTFT p50 / p99, total time p50, tokens/s (content chunks inside the window ÷
window), requests done, errors (non-200, transport errors, a stream without
``[DONE]`` or without content), and the CPU of this process over the window (% of one
core): the load generator competes with what it measures when both run on a small
machine, so its own cost is always reported.

To keep that cost low: one ``AsyncClient`` per simulated client (httpcore's pool scans
all its connections on every request: quadratic in C when shared), httpx on a
plain-asyncio network backend (``httpx_backend.py``; ``--backend anyio`` for the stock
one, ~1.5× the CPU), the SSE stream read as raw bytes and split on blank lines by hand
(no ``aiter_lines``), one ``json.loads`` per chunk to see whether it has content.

Sanity check against the fake upstream alone (it is started as a subprocess)::

    .venv/bin/python bench/gateway/load.py --start-upstream --concurrency 1 64 --seconds 3

or against any OpenAI-compatible base URL::

    .venv/bin/python bench/gateway/load.py --url http://127.0.0.1:8000 --key gfk_... \\
        --concurrency 16 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import selectors
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx_backend
import psutil

HERE = Path(__file__).resolve().parent
TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class CpuMeter:
    """CPU time (user + system) of a process, and optionally its children, between
    ``start()`` and ``stop()``, in % of one core. Children that appear in between count
    in full; those that exit in between are lost (uvicorn with one worker has none)."""

    def __init__(self, process: psutil.Process, children: bool = True) -> None:
        self.process = process
        self.children = children
        self._start: dict[int, float] = {}
        self._started_at = 0.0

    def _sample(self) -> dict[int, float]:
        procs = [self.process]
        if self.children:
            with contextlib.suppress(psutil.Error):
                procs += self.process.children(recursive=True)
        times: dict[int, float] = {}
        for proc in procs:
            try:
                cpu = proc.cpu_times()
            except psutil.Error:
                continue
            times[proc.pid] = cpu.user + cpu.system
        return times

    def start(self) -> None:
        self._start = self._sample()
        self._started_at = time.perf_counter()

    def stop(self) -> float:
        elapsed = time.perf_counter() - self._started_at
        now = self._sample()
        used = sum(t - self._start.get(pid, 0.0) for pid, t in now.items())
        return 100.0 * used / elapsed if elapsed > 0 else math.nan


class MachineMeter:
    """How busy the whole machine was between ``start()`` and ``stop()``: all CPUs'
    non-idle time, in % of one core (up to nproc × 100)."""

    def __init__(self) -> None:
        self._start: Any = None
        self._started_at = 0.0

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0))

    def start(self) -> None:
        self._start = self._busy()
        self._started_at = time.perf_counter()

    def stop(self) -> float:
        elapsed = time.perf_counter() - self._started_at
        return 100.0 * (self._busy() - self._start) / elapsed if elapsed > 0 else math.nan


@dataclass
class RunStats:
    url: str
    concurrency: int
    seconds: float
    requests: int = 0
    errors: int = 0
    ttft_p50_ms: float = math.nan
    ttft_p99_ms: float = math.nan
    total_p50_ms: float = math.nan
    chunks_per_request: float = math.nan
    tokens: int = 0
    tokens_per_s: float = 0.0
    load_cpu_percent: float = math.nan
    cpu_percent: dict[str, float] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Window:
    start: float
    end: float
    ttfts: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, recorded: bool, message: str) -> None:
        if not recorded:
            return
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(message)


def _has_content(data: bytes) -> bool:
    try:
        chunk = json.loads(data)
        choice = chunk["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return bool(content)


async def _one_request(
    client: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str], window: _Window
) -> None:
    started = time.perf_counter()
    recorded = started >= window.start
    first: float | None = None
    chunks = 0
    done = False
    try:
        async with client.stream("POST", path, content=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread())[:200].decode(errors="replace")
                window.error(recorded, f"HTTP {response.status_code}: {text}")
                return
            buffer = b""
            async for raw in response.aiter_raw():
                buffer += raw
                if b"\n\n" not in buffer:
                    continue
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    if not event.startswith(b"data:"):
                        continue  # comments, keep-alives, other fields
                    data = event[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        continue
                    chunks += 1
                    if _has_content(data):
                        now = time.perf_counter()
                        if first is None:
                            first = now
                        if window.start <= now < window.end:
                            window.tokens += 1
    except httpx.HTTPError as exc:
        window.error(recorded, f"{type(exc).__name__}: {exc}")
        return
    if not done or first is None:
        why = "no [DONE]" if not done else "no content"
        window.error(recorded, f"stream ended with {why} after {chunks} chunks")
        return
    if recorded:
        window.ttfts.append(first - started)
        window.totals.append(time.perf_counter() - started)
        window.chunks.append(chunks)


async def _client(
    base_url: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    window: _Window,
    tls: ssl.SSLContext,
    delay: float,
    backend: str,
) -> None:
    # One AsyncClient (one connection) per simulated client: httpcore's pool scans all
    # of its connections on every request, which made one shared pool of 64 cost more
    # CPU than the streams themselves.
    if backend == "asyncio":
        client = httpx.AsyncClient(
            base_url=base_url, transport=httpx_backend.transport(1, tls), timeout=TIMEOUT
        )
    else:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=TIMEOUT, verify=tls)
    async with client:
        await asyncio.sleep(delay)
        while time.perf_counter() < window.end:
            await _one_request(client, path, body, headers, window)


async def run_load(
    base_url: str,
    concurrency: int,
    seconds: float,
    key: str | None = None,
    warmup: float = 1.0,
    model: str = "bench",
    max_tokens: int | None = None,
    meters: dict[str, CpuMeter | MachineMeter] | None = None,
    stagger: float = 0.5,
    backend: str = "asyncio",
) -> RunStats:
    """One run; ``meters`` (name → CpuMeter) are read over the same window as this
    process's own CPU and reported in ``cpu_percent``."""
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Count to a hundred."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if max_tokens:
        request["max_tokens"] = max_tokens
    body = json.dumps(request).encode()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    meters = dict(meters or {})
    own = CpuMeter(psutil.Process(), children=False)
    begin = time.perf_counter()
    window = _Window(start=begin + warmup, end=begin + warmup + seconds)
    stagger = min(stagger, warmup)
    path = "/v1/chat/completions"
    tls = ssl.create_default_context()  # shared: building one per client costs ~20 ms each
    tasks = [
        asyncio.create_task(
            _client(base_url, path, body, headers, window, tls, stagger * i / concurrency, backend)
        )
        for i in range(concurrency)
    ]
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    own.start()
    for meter in meters.values():
        meter.start()
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    load_cpu = own.stop()
    cpu = {name: meter.stop() for name, meter in meters.items()}
    await asyncio.gather(*tasks)
    return RunStats(
        url=base_url,
        concurrency=concurrency,
        seconds=seconds,
        requests=len(window.ttfts),
        errors=window.errors,
        ttft_p50_ms=percentile(window.ttfts, 50) * 1000,
        ttft_p99_ms=percentile(window.ttfts, 99) * 1000,
        total_p50_ms=percentile(window.totals, 50) * 1000,
        chunks_per_request=(sum(window.chunks) / len(window.chunks)) if window.chunks else 0,
        tokens=window.tokens,
        tokens_per_s=window.tokens / seconds,
        load_cpu_percent=load_cpu,
        cpu_percent=cpu,
        error_samples=window.error_samples,
    )


def start_upstream_process(
    port: int, tokens: int, interval_ms: float, timeout: float = 15.0
) -> tuple[subprocess.Popen[str], int]:
    """``fake_upstream.py`` as a subprocess (port 0: any free port) → (process, port)."""
    argv = [sys.executable, str(HERE / "fake_upstream.py"), "--port", str(port)]
    argv += ["--tokens", str(tokens), "--interval", str(interval_ms)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    line = ""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if selector.select(timeout):
            line = proc.stdout.readline()  # "listening on HOST:PORT"
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the fake upstream did not start within {timeout:g} s: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def _print_table(rows: list[RunStats], extra: str) -> None:
    head = "| concurrency | requests | errors | TTFT p50 ms | TTFT p99 ms | total p50 ms "
    head += f"| chunks/req | tok/s | load gen CPU %{extra} |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        cells = [
            f"{r.concurrency}",
            f"{r.requests}",
            f"{r.errors}",
            f"{r.ttft_p50_ms:.2f}",
            f"{r.ttft_p99_ms:.2f}",
            f"{r.total_p50_ms:.1f}",
            f"{r.chunks_per_request:.1f}",
            f"{r.tokens_per_s:.0f}",
            f"{r.load_cpu_percent:.1f}",
            *(f"{v:.1f}" for v in r.cpu_percent.values()),
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="base URL, e.g. http://127.0.0.1:8000 (no /v1)")
    where.add_argument(
        "--start-upstream", action="store_true", help="start fake_upstream.py and load it"
    )
    parser.add_argument("--key", help="sent as Authorization: Bearer KEY")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before it")
    parser.add_argument(
        "--stagger",
        type=float,
        help="seconds over which clients start (default: one answer's duration with "
        "--start-upstream, else 0.5)",
    )
    parser.add_argument("--backend", choices=["asyncio", "anyio"], default="asyncio")
    parser.add_argument("--tokens", type=int, default=64, help="fake upstream: tokens/answer")
    parser.add_argument("--interval", type=float, default=10.0, help="fake upstream: ms/token")
    parser.add_argument("--json", dest="out", type=Path, help="write the runs as JSON here")
    args = parser.parse_args()

    upstream: subprocess.Popen[str] | None = None
    meters: dict[str, CpuMeter | MachineMeter] = {}
    url = args.url
    stagger = args.stagger
    if stagger is None:
        stagger = args.tokens * args.interval / 1000 if args.start_upstream else 0.5
    if args.start_upstream:
        upstream, port = start_upstream_process(0, args.tokens, args.interval)
        url = f"http://127.0.0.1:{port}"
        print(
            f"fake upstream: pid {upstream.pid}, {url}, {args.tokens} tokens every "
            f"{args.interval:g} ms (expect TTFT ≈ {args.interval:g} ms, "
            f"tok/s ≈ concurrency × {1000 / args.interval:.0f} while streaming)\n"
        )
    try:
        rows = []
        for concurrency in args.concurrency:
            meters = {"machine": MachineMeter()}
            if upstream is not None:
                meters["upstream"] = CpuMeter(psutil.Process(upstream.pid))
            stats = asyncio.run(
                run_load(
                    url,
                    concurrency,
                    args.seconds,
                    args.key,
                    args.warmup,
                    args.model,
                    meters=meters,
                    stagger=stagger,
                    backend=args.backend,
                )
            )
            rows.append(stats)
            for sample in stats.error_samples:
                print(f"  error (c={concurrency}): {sample}", file=sys.stderr)
        print(
            f"target {url}, window {args.seconds:g} s after {args.warmup:g} s warm-up, "
            f"{os.cpu_count()} CPUs\n"
        )
        extra = " | whole machine CPU %" + (" | upstream CPU %" if upstream is not None else "")
        _print_table(rows, extra)
        if args.out:
            args.out.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    finally:
        if upstream is not None:
            upstream.terminate()
            upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
