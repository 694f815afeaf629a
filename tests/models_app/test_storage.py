"""Storage accounting per node (``models_app.storage.node_storage``): each root's free
space as the agent reported it, and the copies kept there with the bytes they take."""

from __future__ import annotations

import pytest

from core.units import GIB
from models_app.choices import DownloadState
from models_app.storage import node_storage
from tests.factories import ModelFileFactory, NodeFactory

pytestmark = pytest.mark.django_db


def copy_on(node, root: str, name: str, state=DownloadState.READY, total=GIB, done=0):
    return ModelFileFactory(
        node=node,
        storage_root=root,
        path=f"{root}/{name}/{name}.gguf",
        state=state,
        bytes_total=total,
        bytes_done=done,
    )


def summary(node) -> list[tuple[str, int | None, int, list[str]]]:
    return [
        (usage.root, usage.free, usage.used, [copy.path for copy in usage.copies])
        for usage in node_storage(node)
    ]


def test_it_lists_each_root_in_the_nodes_order_with_its_copies_and_used_bytes():
    node = NodeFactory(disk_free={"/srv/models": 500 * GIB, "/data": 100 * GIB})
    copy_on(node, "/data", "b", total=3 * GIB)
    copy_on(node, "/srv/models", "a", total=2 * GIB)
    copy_on(node, "/data", "a", total=4 * GIB)
    assert summary(node) == [
        ("/srv/models", 500 * GIB, 2 * GIB, ["/srv/models/a/a.gguf"]),
        ("/data", 100 * GIB, 7 * GIB, ["/data/a/a.gguf", "/data/b/b.gguf"]),
    ]


@pytest.mark.parametrize(
    ("state", "used"),
    [
        (DownloadState.READY, 8 * GIB),
        (DownloadState.DOWNLOADING, 3 * GIB),
        (DownloadState.CANCELLED, 3 * GIB),
        (DownloadState.QUEUED, 3 * GIB),
    ],
)
def test_a_finished_copy_counts_its_size_and_an_unfinished_one_its_bytes_so_far(state, used):
    node = NodeFactory(disk_free={"/srv/models": 500 * GIB})
    copy_on(node, "/srv/models", "m", state=state, total=8 * GIB, done=3 * GIB)
    ((_, _, got, _),) = summary(node)
    assert got == used


def test_a_root_without_copies_is_listed_empty():
    node = NodeFactory(disk_free={"/srv/models": 500 * GIB})
    assert summary(node) == [("/srv/models", 500 * GIB, 0, [])]


def test_a_root_the_node_no_longer_reports_is_kept_while_copies_name_it():
    node = NodeFactory(disk_free={"/srv/models": 500 * GIB})
    copy_on(node, "/old", "m", total=5 * GIB)
    assert summary(node) == [
        ("/srv/models", 500 * GIB, 0, []),
        ("/old", None, 5 * GIB, ["/old/m/m.gguf"]),
    ]


def test_other_nodes_copies_are_not_counted():
    node = NodeFactory(disk_free={"/srv/models": 500 * GIB})
    other = NodeFactory(disk_free={"/srv/models": 500 * GIB})
    copy_on(other, "/srv/models", "m", total=5 * GIB)
    assert summary(node) == [("/srv/models", 500 * GIB, 0, [])]


def test_this_node_without_a_report_yet_uses_the_configured_roots(settings):
    settings.GPUFLEET_STORAGE_ROOTS = ["/var/gpufleet/models"]
    local = NodeFactory(name=settings.NODE_NAME, disk_free={})
    remote = NodeFactory(disk_free={})
    assert summary(local) == [("/var/gpufleet/models", None, 0, [])]
    assert summary(remote) == []


def test_a_root_reported_with_a_trailing_slash_holds_the_copies_made_in_it():
    node = NodeFactory(disk_free={"/srv/models/": 500 * GIB})
    copy_on(node, "/srv/models", "m", total=5 * GIB)  # as plan_path records the root
    assert summary(node) == [("/srv/models", 500 * GIB, 5 * GIB, ["/srv/models/m/m.gguf"])]
