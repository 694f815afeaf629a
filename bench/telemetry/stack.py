"""The processes and resources one benchmark run owns, and their teardown.

A ``Stack`` makes a temporary state dir (and, in cluster mode, a fresh PostgreSQL
database), starts daphne and the agents as its own children on 127.0.0.1, and
``close()`` stops exactly those children (by pid: SIGTERM, then SIGKILL), drops the
database it created and removes the state dir. Children also get SIGTERM if this
process dies without cleaning up (Linux ``PR_SET_PDEATHSIG``). Redis is only used,
never flushed: nothing there is deleted by the benchmark.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import psutil

REPO = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).resolve().with_name("django_helper.py")
FEEDER = Path(__file__).resolve().with_name("feeder.py")
NODE_PREFIX = "bench-"
_PR_SET_PDEATHSIG = 1
_CLEARED_ENV = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"daphne did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class Stack:
    """See the module docstring. Use as a context manager."""

    def __init__(
        self, mode: str, gpu_spec: str, postgres_url: str, redis_url: str, keep: bool
    ) -> None:
        self.mode = mode
        self.keep = keep
        self.python = sys.executable
        self.state_dir = Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
        self.log_dir = self.state_dir / "logs"
        self.log_dir.mkdir()
        self.postgres_admin_url = postgres_url
        self.database: str | None = None
        self.redis_url = redis_url
        self.web: subprocess.Popen[bytes] | None = None
        self.agents: list[subprocess.Popen[bytes]] = []
        self.feeder_outputs: list[Path] = []
        self._logs: list[IO[bytes]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")}
        for key in _CLEARED_ENV:
            self.env.pop(key, None)
        self.env |= {
            "GPUFLEET_STATE_DIR": str(self.state_dir),
            "GPUFLEET_GPU_PROBE": "simulated",
            "GPUFLEET_SIMULATED_GPUS": gpu_spec,
            "GPUFLEET_ALLOWED_HOSTS": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- setup -----------------------------------------------------------------------

    def prepare_database(self) -> None:
        if self.mode == "cluster":
            self._create_postgres_database()
            self._check_redis()
            self.env["REDIS_URL"] = self.redis_url
        self.manage("migrate", "--noinput", timeout=600)

    def _create_postgres_database(self) -> None:
        import psycopg
        from psycopg import sql

        name = f"gpufleet_bench_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(self.postgres_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.database = name
        self.env["DATABASE_URL"] = _with_database(self.postgres_admin_url, name)

    def _drop_postgres_database(self) -> None:
        if self.database is None:
            return
        import psycopg
        from psycopg import sql

        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        with psycopg.connect(self.postgres_admin_url, autocommit=True) as conn:
            conn.execute(query.format(sql.Identifier(self.database)))
        self.database = None

    def _check_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()

    def manage(self, *args: str, timeout: float = 120) -> str:
        return self._run([self.python, "manage.py", *args], timeout)

    def helper(self, *args: str, timeout: float = 60) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._run([self.python, str(HELPER), *args], timeout))
        return result

    def _run(self, argv: list[str], timeout: float) -> str:
        done = subprocess.run(
            argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:3])} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    # --- processes -------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        self._logs.append(log)
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches us; we stop them in order
            preexec_fn=_die_with_parent,
        )

    def start_web(self, port: int) -> psutil.Process:
        daphne = str(Path(self.python).with_name("daphne"))
        argv = [daphne, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
        self.web = self._spawn("daphne", argv)
        wait_for_port(port, self.web, timeout=120)
        return psutil.Process(self.web.pid)

    def start_agents(self, count: int) -> list[psutil.Process]:
        for index in range(count):
            node = f"{NODE_PREFIX}{index}"
            argv = [self.python, "manage.py", "agent", "--node", node]
            self.agents.append(self._spawn(f"agent-{node}", argv))
        return [psutil.Process(proc.pid) for proc in self.agents]

    def start_feeders(self, nodes: int, feeders: int, spec: str) -> list[psutil.Process]:
        """``nodes`` simulated nodes driven by ``feeders`` processes (``feeder.py``)
        instead of one agent each; returns once every feeder has registered its nodes."""
        ready: list[Path] = []
        for index in range(feeders):
            first, last = nodes * index // feeders, nodes * (index + 1) // feeders
            out = self.state_dir / f"feeder-{index}.json"
            ready.append(self.state_dir / f"feeder-{index}.ready")
            self.feeder_outputs.append(out)
            argv = [self.python, str(FEEDER), "--first", str(first), "--last", str(last),
                    "--spec", spec, "--out", str(out), "--ready", str(ready[-1])]  # fmt: skip
            self.agents.append(self._spawn(f"feeder-{index}", argv))
        deadline = time.monotonic() + 300
        while not all(path.exists() for path in ready):
            if any(proc.poll() is not None for proc in self.agents):
                raise RuntimeError(f"a feeder exited early; see {self.log_dir}")
            if time.monotonic() > deadline:
                raise TimeoutError("the feeders did not register their nodes in 300 s")
            time.sleep(0.5)
        return [psutil.Process(proc.pid) for proc in self.agents]

    def stop_agents(self) -> list[dict[str, Any]]:
        """Stop the agents or feeders; returns what each feeder wrote when stopped."""
        self._stop(self.agents, grace=15)
        return [json.loads(p.read_text()) for p in self.feeder_outputs if p.exists()]

    def wait_sampled(self, gpus: int, timeout: float, within: float = 5.0) -> list[str]:
        """Until every expected GPU has a fresh sample; returns the node ids."""
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for proc in self.agents:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"an agent exited with {proc.returncode}; see {self.log_dir}"
                    )
            seen = self.helper("status", NODE_PREFIX, str(within))
            if seen["sampled"] >= gpus:
                return list(seen["node_ids"])
            time.sleep(1.0)
        raise TimeoutError(f"only {seen.get('sampled', 0)}/{gpus} GPUs sampled in {timeout:.0f} s")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --- teardown --------------------------------------------------------------------

    def _stop(self, procs: list[subprocess.Popen[bytes]], grace: float) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def close(self) -> None:
        try:
            self._stop(self.agents, grace=15)
            if self.web is not None:
                self._stop([self.web], grace=15)
        finally:
            for log in self._logs:
                log.close()
            try:
                self._drop_postgres_database()
            finally:
                if not self.keep:
                    shutil.rmtree(self.state_dir, ignore_errors=True)
