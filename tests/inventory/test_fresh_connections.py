"""Database work in worker threads (the event relay, the gateway) survives a connection
that broke underneath it, as after a database restart."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from core.events import fresh_connection_call
from inventory.models import Node
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.postgres  # SQLite's in-memory test database cannot be closed and reopened
def test_a_thread_whose_connection_broke_gets_a_new_one():
    if connection.vendor != "postgresql":
        skip_or_fail("needs PostgreSQL (runs in make test's cluster pass)")
    results: list[object] = []

    def work() -> None:
        fresh_connection_call(lambda: Node.objects.count())  # the thread has a connection
        connection.ensure_connection()
        connection.connection.close()  # the server went away meanwhile
        try:
            results.append(fresh_connection_call(lambda: Node.objects.count()))
        except Exception as exc:  # pragma: no cover - what the test catches
            results.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert results == [0]


def test_connections_live_long_only_where_asked(settings):
    from django.conf import settings as django_settings

    assert django_settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True
