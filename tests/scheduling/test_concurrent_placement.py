"""Placement under real concurrency: on PostgreSQL, 20 deployments created at the same
moment in 20 threads (20 connections, 20 transactions) never claim more than a GPU has."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from core.units import GIB
from models_app.choices import DownloadState
from scheduling import actions
from scheduling.choices import InstanceState
from scheduling.models import GpuClaim, Instance
from tests.conftest import skip_or_fail
from tests.factories import GpuFactory, ModelFileFactory, NodeFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_twenty_deployments_placed_at_once_never_overcommit_a_gpu(model_7b, queued):
    if connection.vendor != "postgresql":
        skip_or_fail("needs PostgreSQL (runs in make test's cluster pass)")
    node = NodeFactory(name="node-a", disk_free={"/srv/models": 500 * GIB})
    gpu = GpuFactory(node=node, index=0, memory_used=1 * GIB)
    ModelFileFactory(model=model_7b, node=node, state=DownloadState.READY)
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def deploy(number: int) -> None:
        try:
            barrier.wait(timeout=30)
            actions.do_create_deployment(model=model_7b, served_name=f"m{number}", n_ctx=8192)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deploy, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    gpu.refresh_from_db()
    claims = list(GpuClaim.objects.filter(gpu=gpu).values_list("claimed", flat=True))
    need = claims[0]
    usable = gpu.memory_total - gpu.reserved - gpu.memory_used
    assert sum(claims) <= usable
    assert len(claims) == (usable - 256 * 1024**2) // need  # all that fit, no more
    assert Instance.objects.filter(state=InstanceState.PENDING).count() == 20 - len(claims)
