"""Gateways asking for an instance of one deployment at the same moment (several
processes, several connections) start one instance, not one each: on PostgreSQL the
deployment's row is locked while its instances are counted."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from models_app.choices import DownloadState
from scheduling import actions
from scheduling.models import Deployment, Instance
from tests.conftest import skip_or_fail
from tests.factories import ModelFileFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_eight_gateways_asking_at_once_start_one_instance(fleet, model_7b, queued):
    if connection.vendor != "postgresql":
        skip_or_fail("needs PostgreSQL (runs in make test's cluster pass)")
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    deployment = actions.do_create_deployment(
        model=model_7b, served_name="cold", n_ctx=4096, replicas=3, min_replicas=0
    )
    # Traffic asked before and its instance has ended since: nothing to raise, only
    # what is missing to create, which is where two askers could both create one.
    Deployment.objects.filter(pk=deployment.pk).update(demand=1)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            barrier.wait(timeout=30)
            actions.do_demand(deployment.pk, 1)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert Instance.objects.filter(deployment=deployment).count() == 1
