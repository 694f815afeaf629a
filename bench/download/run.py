"""Benchmark of the download engine: throughput against the fake hub, next to curl.

A random file (default 1 GiB) on disk is served by the fake hub of the test suite
(``tests/transfer/fakehub.py``) running in its own process, with ``sendfile``. Runs
alternate between ``curl -o`` of the CDN URL and the engine's ``download_hf_file``
(HEAD on the hub, GET on the CDN, sha256, fsync, rename), each writing a fresh file
on the same disk after a ``sync``. Reported per tool: every run's seconds, the
median and its throughput; for the engine also the part before the final fsync and
rename (``transfer``), and for curl an fsync of its output afterwards, so that both
figures exist with the same durability. Target: the engine's transfer >= 90 % of
curl's throughput.

Run from the repository root::

    .venv/bin/python bench/download/run.py [--size-mib 1024] [--runs 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

from core.units import MIB  # noqa: E402
from models_app.transfer import (  # noqa: E402
    DownloadOptions,
    HfFile,
    download_hf_file,
    resolve_hf_file,
)
from models_app.transfer import partial as partial_module  # noqa: E402


@dataclass
class Timings:
    """Seconds per run of one tool; ``before_sync`` is the part before the fsync."""

    total: list[float] = field(default_factory=list)
    before_sync: list[float] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        print("curl is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-download-") as work:
        source = make_file(Path(work) / "source.bin", args.size_mib * MIB)
        with fake_hub(source) as endpoint:
            curl, engine = measure(endpoint, Path(work), args.runs, source.stat().st_size)
    report(curl, engine, args.size_mib * MIB, args.runs)
    return 0


def make_file(path: Path, size: int) -> Path:
    """Random bytes (incompressible, unlike zeros), written once per benchmark."""
    with path.open("wb") as file:
        for offset in range(0, size, 8 * MIB):
            file.write(os.urandom(min(8 * MIB, size - offset)))
    return path


@contextmanager
def fake_hub(source: Path) -> Iterator[str]:
    """The fake hub in its own process, serving ``source`` as bench/big: big.gguf."""
    command = [sys.executable, "-m", "tests.transfer.fakehub", "--file", str(source)]
    server = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        yield json.loads(server.stdout.readline())["endpoint"]
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


def measure(endpoint: str, work: Path, runs: int, size: int) -> tuple[Timings, Timings]:
    """Alternate the tools (curl first on even runs, the engine first on odd ones),
    after one untimed run of each (first-run effects of the VM's disk and memory)."""
    source = HfFile("bench/big", "big.gguf", endpoint=endpoint)
    url = resolve_hf_file(source).url
    time_curl(url, work / "curl.bin", size, Timings())
    time_engine(source, work / "engine.gguf", size, Timings())
    curl, engine = Timings(), Timings()
    for run in range(runs):
        order: list[Callable[[], None]] = [
            lambda: time_curl(url, work / "curl.bin", size, curl),
            lambda: time_engine(source, work / "engine.gguf", size, engine),
        ]
        for step in order if run % 2 == 0 else order[::-1]:
            step()
        print(
            f"run {run + 1}: curl {curl.total[-1]:.2f} s, engine {engine.total[-1]:.2f} s",
            flush=True,
        )
    return curl, engine


def fresh(path: Path) -> None:
    """No output from an earlier run, and nothing of it left to write back."""
    for name in (path, path.with_name(path.name + ".partial")):
        name.unlink(missing_ok=True)
    os.sync()
    time.sleep(0.5)


def time_curl(url: str, out: Path, size: int, timings: Timings) -> None:
    fresh(out)
    began = time.perf_counter()
    subprocess.run(["curl", "-sS", "-f", "-o", str(out), url], check=True)
    written = time.perf_counter()
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    timings.before_sync.append(written - began)
    timings.total.append(time.perf_counter() - began)
    assert out.stat().st_size == size


def time_engine(source: HfFile, out: Path, size: int, timings: Timings) -> None:
    fresh(out)
    marks: list[float] = []
    commit = partial_module.PartialFile.commit

    def timed_commit(self: partial_module.PartialFile) -> None:
        marks.append(time.perf_counter())
        commit(self)

    partial_module.PartialFile.commit = timed_commit  # type: ignore[method-assign]
    try:
        began = time.perf_counter()
        result = download_hf_file(source, out, DownloadOptions(space_margin=0))
        timings.total.append(time.perf_counter() - began)
    finally:
        partial_module.PartialFile.commit = commit  # type: ignore[method-assign]
    timings.before_sync.append(marks[0] - began)
    assert result.size == size and result.verified


def report(curl: Timings, engine: Timings, size: int, runs: int) -> None:
    def line(name: str, values: list[float]) -> str:
        median = statistics.median(values)
        shown = " ".join(f"{v:.2f}" for v in values)
        return f"| {name} | {shown} | {median:.2f} | {size / median / 1e6:.0f} |"

    machine = f"{platform.platform()}, {os.cpu_count()} CPUs"
    print(f"\n{size // MIB} MiB, {runs} runs each, alternating; {machine}\n")
    print("| | runs (s) | median (s) | MB/s |\n|---|---|---|---|")
    print(line("curl -o", curl.before_sync))
    print(line("engine, transfer + sha256 (before fsync)", engine.before_sync))
    print(line("curl -o, then fsync", curl.total))
    print(line("engine, complete (fsync, rename)", engine.total))
    transfer = statistics.median(curl.before_sync) / statistics.median(engine.before_sync)
    complete = statistics.median(curl.total) / statistics.median(engine.total)
    print(f"\nengine / curl throughput: transfer {transfer:.0%}, with fsync {complete:.0%}")


if __name__ == "__main__":
    sys.exit(main())
