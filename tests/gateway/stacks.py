"""A whole gpufleet node for end-to-end gateway tests: web (``/v1``), agent and qcluster
as real processes, on the embedded default (SQLite, no Redis) or as a cluster node
(a fresh PostgreSQL database and a Redis database of its own)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import skip_or_fail
from tests.e2e.stack import PYTHON, Stack

MODES = [
    pytest.param("embedded", marks=pytest.mark.embedded),
    pytest.param("cluster", marks=[pytest.mark.postgres, pytest.mark.redis]),
]
NODES = (
    "from inventory.models import Node; print(list(Node.objects.values_list('name', flat=True)))"
)


def wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.5)


def stop_backends(node: str) -> None:
    from scheduling import backend

    for found in backend.find_backends():
        if found.node == node:
            backend.stop(found.pid, found.pid, timeout=5)


@contextmanager
def cluster_services() -> Iterator[dict[str, str]]:
    """A new PostgreSQL database and Redis database 9, emptied, for one stack."""
    import psycopg
    import redis

    base = os.environ.get("GPUFLEET_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/x")
    redis_url = os.environ.get("GPUFLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    redis_url = urlsplit(redis_url)._replace(path="/9").geturl()
    name = f"gpufleet_gw_{uuid.uuid4().hex[:8]}"
    maintenance = urlsplit(base)._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        redis.Redis.from_url(redis_url, socket_connect_timeout=5).flushdb()
    except (psycopg.Error, redis.RedisError, OSError) as exc:
        skip_or_fail(f"PostgreSQL or Redis not reachable: {exc}")
    try:
        yield {"DATABASE_URL": urlsplit(base)._replace(path=f"/{name}").geturl(),
               "REDIS_URL": redis_url}  # fmt: skip
    finally:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def node_stack(state: Path, mode: str, node: str, **env: str) -> Iterator[Stack]:
    """Migrated, with web, agent and qcluster running and ``node`` registered."""
    with cluster_services() if mode == "cluster" else _nothing() as services:
        stack = Stack(state, GPUFLEET_NODE_NAME=node, Q_CLUSTER_NAME=node, **services, **env)
        try:
            stack.manage("migrate", "--noinput", "-v0")
            stack.start("agent", PYTHON, "manage.py", "agent")
            stack.start("worker", PYTHON, "manage.py", "qcluster")
            stack.start_web()
            wait(lambda: node in stack.manage("shell", "-c", NODES), 60, "the agent registers")
            yield stack
        finally:
            stack.stop_all()
            stop_backends(node)


@contextmanager
def _nothing() -> Iterator[dict[str, str]]:
    yield {}
