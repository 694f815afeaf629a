"""A running cluster stack (web, agent, qcluster on PostgreSQL + Redis) rides out a
restart of PostgreSQL and then of Redis: no process exits, heartbeats resume, live
updates reach a websocket again, an event sent while Redis was down is delivered
afterwards, and a task queued after the restarts runs.

The test starts a PostgreSQL and a Redis of its own (from the machine's binaries, on
free ports), so restarting them disturbs nothing else."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from tests.conftest import skip_or_fail
from tests.e2e.stack import PYTHON, Stack, free_port
from tests.gateway.stacks import wait

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
NODE = "restart-node"
PASSWORD = "a-long-test-password-1"


class Postgres:
    """A throw-away PostgreSQL cluster (trust auth, no fsync) on a free port."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="gpufleet-pg-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/gpufleet"

    def _run(self, *argv: str) -> None:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.dir, "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def _ctl(self, action: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                  "-m", "fast", "-o", options, action)  # fmt: skip

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self._ctl("start")
        import psycopg

        with psycopg.connect(self.url.replace("/gpufleet", "/postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE gpufleet")

    def restart(self) -> None:
        self._ctl("restart")

    def stop(self) -> None:
        with suppress(subprocess.SubprocessError, OSError):
            self._ctl("stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """A throw-away redis-server with an append-only file, as production should run it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gpufleet-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.dir), "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait(self._answers, 20, "redis answers")

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        time.sleep(2)  # a real outage: clients see refused connections for a while
        self.start()


@pytest.fixture
def services() -> Iterator[tuple[Postgres, Redis]]:
    found = sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found or not shutil.which("redis-server"):
        skip_or_fail("PostgreSQL's initdb or redis-server is not installed")
    postgres, redis_server = Postgres(Path(found[-1]).parent), Redis()
    try:
        postgres.start()
        redis_server.start()
        yield postgres, redis_server
    finally:
        redis_server.stop()
        shutil.rmtree(redis_server.dir, ignore_errors=True)
        postgres.stop()


@pytest.fixture
def stack(services, tmp_path) -> Iterator[Stack]:
    postgres, redis_server = services
    stack = Stack(
        tmp_path, GPUFLEET_NODE_NAME=NODE, Q_CLUSTER_NAME=NODE, DATABASE_URL=postgres.url,
        REDIS_URL=redis_server.url, GPUFLEET_SIMULATED_GPUS="1xL4",
    )  # fmt: skip
    try:
        stack.manage("migrate", "--noinput", "-v0")
        stack.create_user("viewer", PASSWORD)
        keep = {"GPUFLEET_DB_CONN_MAX_AGE": "60"}  # as the Procfile runs them
        stack.start("agent", PYTHON, "manage.py", "agent", **keep)
        stack.start("worker", PYTHON, "manage.py", "qcluster", **keep)
        stack.start_web()
        wait(lambda: heartbeat_age(stack) < 5, 90, "the agent registers and heartbeats")
        yield stack
    finally:
        stack.stop_all()


def query(stack: Stack, code: str) -> str:
    """What ``code`` prints last (the shell first says what it imported)."""
    lines = stack.manage("shell", "-c", code).strip().splitlines()
    return lines[-1] if lines else ""


def heartbeat_age(stack: Stack) -> float:
    code = (
        "from django.utils import timezone; from inventory.models import Node; "
        f"n = Node.objects.filter(name={NODE!r}).first(); "
        "print((timezone.now() - n.last_heartbeat).total_seconds() if n else 1e9)"
    )
    try:
        return float(query(stack, code))
    except RuntimeError:  # the database is still restarting
        return 1e9


def all_alive(stack: Stack) -> None:
    exited = {name: p.returncode for name, p in stack.procs.items() if p.poll() is not None}
    assert not exited, f"processes exited: {exited}; logs in {stack.state_dir}"


def live_fragment(stack: Stack) -> str:
    """Log in, open the overview's websocket and return the first message it pushes."""
    from websockets.sync.client import connect

    with httpx.Client(base_url=stack.url, timeout=10) as http:
        http.get("/login/")
        token = http.cookies["csrftoken"]
        form = {"username": "viewer", "password": PASSWORD, "csrfmiddlewaretoken": token}
        assert http.post("/login/", data=form).status_code in (200, 302)
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    url = stack.url.replace("http://", "ws://") + "/ws/fleet/"
    with connect(url, additional_headers={"Cookie": cookie, "Origin": stack.url}) as socket:
        return str(socket.recv(timeout=20))


def test_the_stack_rides_out_restarts_of_postgresql_and_redis(services, stack):
    postgres, redis_server = services
    assert live_fragment(stack)

    postgres.restart()
    time.sleep(3)
    all_alive(stack)
    wait(lambda: heartbeat_age(stack) < 3, 30, "heartbeats resume after PostgreSQL restarted")
    stack.wait_healthy(30)

    redis_server.stop()
    query(stack, (  # an event sent while Redis is down is kept, not lost
        "from django.db import transaction; from core import events\n"
        "with transaction.atomic(): events.send('maintenance.changed')\n"
    ))  # fmt: skip
    kept = "from core.models import LiveEvent; print(LiveEvent.objects.count())"
    assert int(query(stack, kept)) >= 1
    time.sleep(3)
    redis_server.start()
    time.sleep(3)
    all_alive(stack)
    wait(lambda: query(stack, kept) == "0", 30, "the kept event is sent once Redis is back")
    wait(lambda: heartbeat_age(stack) < 3, 30, "heartbeats go on after Redis restarted")
    assert live_fragment(stack)  # the web process's channel layer reconnected

    marker = f"after-restarts-{time.time_ns()}"
    query(stack, (
        "from django_q.tasks import async_task; "
        f"async_task('inventory.leases.holder_of', {marker!r}, cluster={NODE!r}, "
        f"task_name={marker!r})"
    ))  # fmt: skip
    ran = f"from django_q.models import Task; print(Task.objects.filter(name={marker!r}).count())"
    wait(lambda: query(stack, ran) == "1", 60, "a task queued after the restarts runs")
    all_alive(stack)
