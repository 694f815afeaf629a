"""The cluster pass of ``make test``: the suite again on PostgreSQL and Redis.

    python scripts/cluster_tests.py [extra pytest arguments]

Services (override with the environment):
  GPUFLEET_TEST_POSTGRES_URL  default postgres://postgres@127.0.0.1:5432/gpufleet
  GPUFLEET_TEST_REDIS_URL     default redis://127.0.0.1:6379/0

The PostgreSQL database is created if missing (pytest-django then creates its own
``test_<name>`` beside it). If a service cannot be reached, a developer's run prints
why and exits 0; with CI=true that is a failure.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/gpufleet"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
# The embedded-default checks (SQLite, no Redis) already ran in the first pass; browser
# tests need nothing from the cluster services.
MARKERS = "not browser and not embedded"


class Unreachable(Exception):
    pass


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def check_postgres(url: str) -> None:
    """Connect to the server's ``postgres`` database and create ours if missing."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise Unreachable(f"{url}: no database name in the URL")
    maintenance = parts._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                print(f"cluster pass: created database {name}")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unreachable(f"PostgreSQL at {_where(parts)} not reachable ({reason})") from exc


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5).ping()
    except (redis.RedisError, OSError) as exc:
        raise Unreachable(f"Redis at {_where(urlsplit(url))} not reachable ({exc})") from exc


def _where(parts: SplitResult) -> str:
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "localhost"
    return f"{host}:{port}" if port else host


def pytest_command(extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-m", MARKERS, *extra]


def main(argv: list[str]) -> int:
    postgres = os.environ.get("GPUFLEET_TEST_POSTGRES_URL") or DEFAULT_POSTGRES
    redis_url = os.environ.get("GPUFLEET_TEST_REDIS_URL") or DEFAULT_REDIS
    try:
        check_postgres(postgres)
        check_redis(redis_url)
    except Unreachable as exc:
        if in_ci():
            print(f"FAILED cluster pass: {exc} (CI must run it)", file=sys.stderr)
            return 1
        print(f"SKIPPED cluster pass: {exc}")
        return 0
    env = os.environ | {
        "DATABASE_URL": postgres,
        "REDIS_URL": redis_url,
        "GPUFLEET_TEST_POSTGRES_URL": postgres,
        "GPUFLEET_TEST_REDIS_URL": redis_url,
    }
    command = pytest_command(argv)
    print(f"cluster pass: DATABASE_URL={postgres} REDIS_URL={redis_url}", flush=True)
    print(shlex.join(command), flush=True)
    rc = subprocess.call(command, cwd=ROOT, env=env)
    if rc == 5:
        print("cluster pass: pytest collected no tests", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
