"""Shared fixtures: personas (admin, operator, viewer, anonymous) and a small fleet."""

from __future__ import annotations

import os

# huggingface_hub reads these when it is imported: the fake hub speaks no Xet, and no
# token saved on this machine may leak into a test.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import pytest
from django.test import Client

from tests.factories import GpuFactory, NodeFactory, UserFactory

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Service- or browser-backed tests skip with a reason on a dev machine, never in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """SQLite tests run on a file, as gpufleet does, not on Django's shared-cache memory
    database: there a thread that writes while another reads fails at once with "database
    table is locked" instead of waiting (WAL and the busy timeout apply to files only)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        path = tmp_path_factory.mktemp("database") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


@pytest.fixture
def admin_user(db):
    return UserFactory(username="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def operator_user(db):
    return UserFactory(username="operator", operator=True)


@pytest.fixture
def viewer_user(db):
    return UserFactory(username="viewer")


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_client(admin_user) -> Client:
    return _client_for(admin_user)


@pytest.fixture
def operator_client(operator_user) -> Client:
    return _client_for(operator_user)


@pytest.fixture
def viewer_client(viewer_user) -> Client:
    return _client_for(viewer_user)


@pytest.fixture
def anon_client() -> Client:
    return Client()


@pytest.fixture
def node(db):
    return NodeFactory(name="node-a")


@pytest.fixture
def gpus(node):
    return [GpuFactory(node=node, index=i) for i in range(2)]


@pytest.fixture
def gpu(gpus):
    return gpus[0]


@pytest.fixture
def sent_events(monkeypatch) -> list[dict]:
    """Events delivered after commit, whatever the transport (outbox table or Redis)."""
    from core import events

    sent: list[dict] = []
    original = events.deliver

    def record(event):
        sent.append(event)
        original(event)

    monkeypatch.setattr(events, "deliver", record)
    return sent


@pytest.fixture
def queued(monkeypatch) -> list[tuple[str, tuple, str]]:
    """Tasks handed to Django-Q, recorded instead of queued: (function, args, cluster)."""
    calls: list[tuple[str, tuple, str]] = []

    def fake_async_task(func, *args, cluster=None, group=None, **kwargs):
        calls.append((func, args, cluster))
        return f"task-{len(calls)}"

    monkeypatch.setattr("django_q.tasks.async_task", fake_async_task)
    return calls


@pytest.fixture(autouse=True)
def _fresh_learning_cache():
    """What measurements teach is cached per process: each test learns from its own."""
    from models_app import learning

    learning._RATIOS.clear()
    yield


@pytest.fixture(autouse=True)
def _fresh_redis_cache():
    """In the cluster pass the cache is Redis, which outlives each test's database:
    throttling counters must not carry over from one test to the next."""
    from django.conf import settings

    if settings.REDIS_URL:
        from django.core.cache import cache

        cache.clear()
    yield
