"""The overview and its live resync read the fleet in a fixed number of queries, however
many GPUs (and claims on them) there are."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory import live
from tests.factories import GpuFactory, NodeFactory

pytestmark = pytest.mark.django_db


def queries_for_resync() -> int:
    live._cache.clear()
    with CaptureQueriesContext(connection) as captured:
        live.render_resync()
    return len(captured)


def test_the_resync_does_not_query_per_gpu():
    node = NodeFactory(name="node-a")
    GpuFactory(node=node, index=0)
    few = queries_for_resync()
    for index in range(1, 16):
        GpuFactory(node=node, index=index)
    assert queries_for_resync() == few
