"""Small jobs the benchmark runs inside the project's Django environment.

``run.py`` starts this file as a subprocess with the very same environment as the web
process and the agents (state dir, database, Redis), so it reads and writes the same
database. Each command prints one JSON object on stdout:

* ``session``: create the benchmark user and a logged-in session → ``{"session_key"}``;
* ``status PREFIX [SECONDS]``: the nodes named ``PREFIX*`` and how many of their GPUs
  were sampled in the last SECONDS (5) → ``{"node_ids", "gpus", "sampled"}``;
* ``stats``: database size and row counts after the run.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import (  # noqa: E402
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
)
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from core.models import LiveEvent  # noqa: E402
from inventory.models import Gpu, GpuSample, Node  # noqa: E402

BENCH_USER = "bench-telemetry"


def create_session() -> dict[str, Any]:
    user, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
    user.set_unusable_password()
    user.is_active = True
    user.save()
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return {"session_key": store.session_key}


def status(prefix: str, within: float = 5.0) -> dict[str, Any]:
    nodes = list(Node.objects.filter(name__startswith=prefix).order_by("name"))
    gpus = Gpu.objects.filter(node__in=nodes)
    recent = timezone.now() - timedelta(seconds=within)
    return {
        "node_ids": [str(node.pk) for node in nodes],
        "gpus": gpus.count(),
        "sampled": gpus.filter(sampled_at__gte=recent).count(),
    }


def _database_bytes() -> int:
    if settings.IS_SQLITE:
        base = Path(settings.DATABASES["default"]["NAME"])
        files = [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]
        return sum(path.stat().st_size for path in files if path.exists())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        return int(cursor.fetchone()[0])


def stats() -> dict[str, Any]:
    return {
        "database_bytes": _database_bytes(),
        "live_events": LiveEvent.objects.count(),
        "gpu_samples": GpuSample.objects.count(),
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["session"]:
        result = create_session()
    elif argv[:1] == ["status"] and len(argv) in (2, 3):
        result = status(argv[1], float(argv[2]) if len(argv) == 3 else 5.0)
    elif argv[:1] == ["stats"]:
        result = stats()
    else:
        print("usage: django_helper.py session | status PREFIX [SECONDS] | stats", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
