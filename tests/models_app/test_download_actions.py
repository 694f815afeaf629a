"""Download actions: requesting, claiming, progress, cancel, retry and resuming stalled ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.units import GIB
from models_app import actions
from models_app.actions import DownloadRefused, Progress
from models_app.choices import DownloadState, SourceKind
from models_app.models import ModelFile
from tests.factories import CatalogModelFactory, ModelFileFactory, NodeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def node():
    return NodeFactory(name="gpu-a", disk_free={"/srv/models": 500 * GIB, "/data": 100 * GIB})


def test_a_request_queues_a_task_on_the_target_nodes_worker(
    node, queued, django_capture_on_commit_callbacks
):
    model = CatalogModelFactory(hf_repo="Qwen/Qwen2-GGUF", hf_filename="q8.gguf")
    with django_capture_on_commit_callbacks(execute=True):
        copy = actions.do_request_download(model, node)
    assert copy.state == DownloadState.QUEUED
    assert copy.storage_root == "/srv/models"
    assert copy.path == "/srv/models/Qwen__Qwen2-GGUF/q8.gguf"
    assert queued == [(actions.TASK, (str(copy.pk),), "gpu-a")]
    copy.refresh_from_db()
    assert copy.task_id == "task-1"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("llama", "/srv/models/llama/tiny-Q8_0.gguf"),
        ("/data/llm/x", "/data/llm/x/tiny-Q8_0.gguf"),
        ("/srv/models/./a//b/", "/srv/models/a/b/tiny-Q8_0.gguf"),
    ],
)
def test_a_download_path_inside_a_root_is_kept(node, queued, path, expected):
    copy = actions.do_request_download(CatalogModelFactory(), node, path)
    assert copy.path == expected


@pytest.mark.parametrize(
    "path", ["../etc", "/etc/models", "/srv/models/../etc", "/srv/modelsx/a", "a/../../b", "a\x00b"]
)
def test_paths_outside_the_storage_roots_are_refused(node, queued, path):
    with pytest.raises(DownloadRefused) as refused:
        actions.do_request_download(CatalogModelFactory(), node, path)
    assert refused.value.field == "download_path"
    assert not ModelFile.objects.exists()


def test_the_same_model_is_never_downloaded_twice_to_a_node(node, queued):
    model = CatalogModelFactory()
    first = actions.do_request_download(model, node)
    with pytest.raises(DownloadRefused) as refused:
        actions.do_request_download(model, node, "elsewhere")
    assert refused.value.status == 409
    assert refused.value.existing == first
    assert ModelFile.objects.count() == 1


def test_another_model_may_not_take_a_path_in_use(node, queued):
    one = CatalogModelFactory(hf_filename="same.gguf")
    other = CatalogModelFactory(hf_filename="same.gguf")
    actions.do_request_download(one, node, "shared")
    with pytest.raises(DownloadRefused) as refused:
        actions.do_request_download(other, node, "shared")
    assert refused.value.status == 409


def test_a_failed_copy_does_not_block_a_new_request(node, queued):
    model = CatalogModelFactory()
    ModelFileFactory(model=model, node=node, state=DownloadState.FAILED)
    assert actions.do_request_download(model, node).state == DownloadState.QUEUED


def test_a_disk_that_cannot_hold_the_model_is_refused(queued):
    small = NodeFactory(disk_free={"/srv/models": 2 * GIB})
    with pytest.raises(DownloadRefused, match="Not enough disk space") as refused:
        actions.do_request_download(CatalogModelFactory(size_bytes=2 * GIB), small)
    assert refused.value.status == 507


def test_a_node_without_storage_roots_is_refused(queued):
    with pytest.raises(DownloadRefused, match="no storage roots"):
        actions.do_request_download(CatalogModelFactory(), NodeFactory(disk_free={}))


def test_a_model_that_is_a_path_on_a_node_has_nothing_to_download(node, queued):
    model = CatalogModelFactory(source_kind=SourceKind.PATH, path="/m/a.gguf", path_node=node)
    with pytest.raises(DownloadRefused, match="nothing to download"):
        actions.do_request_download(model, node)


def test_a_claimed_download_takes_progress_until_it_is_cancelled():
    copy = ModelFileFactory()
    claimed = actions.do_claim(str(copy.pk), "worker-1")
    assert claimed is not None and claimed.state == DownloadState.DOWNLOADING
    assert claimed.attempts == 0 and ModelFile.objects.get(pk=copy.pk).attempts == 1
    assert actions.do_progress(claimed, "worker-1", Progress(GIB, 1e8, 10.0))
    assert ModelFile.objects.get(pk=copy.pk).bytes_done == GIB
    assert actions.do_cancel(claimed)
    assert not actions.do_progress(claimed, "worker-1", Progress(2 * GIB, 1e8, 0.0))
    assert ModelFile.objects.get(pk=copy.pk).bytes_done == GIB


def test_a_worker_that_was_taken_over_stops_recording_progress():
    copy = ModelFileFactory()
    old = actions.do_claim(str(copy.pk), "worker-old")
    assert actions.do_claim(str(copy.pk), "worker-new") is not None
    assert not actions.do_progress(old, "worker-old", Progress(5, 1.0, None))


def test_finished_copies_and_cancelled_ones_are_not_claimed():
    for state in (DownloadState.READY, DownloadState.CANCELLED, DownloadState.FAILED):
        assert actions.do_claim(str(ModelFileFactory(state=state).pk), "w") is None


def test_verifying_then_ready_records_the_size_and_sha256():
    copy = actions.do_claim(str(ModelFileFactory().pk), "w")
    assert actions.do_start_verifying(copy, "w")
    assert actions.do_finish(copy, 1234, "ab" * 32)
    copy.refresh_from_db()
    assert (copy.state, copy.bytes_done, copy.bytes_total) == (DownloadState.READY, 1234, 1234)
    assert copy.sha256 == "ab" * 32
    assert copy.finished_at is not None


def test_retry_requeues_a_failed_download(queued, django_capture_on_commit_callbacks):
    copy = ModelFileFactory(state=DownloadState.FAILED, error="boom", bytes_done=10)
    with django_capture_on_commit_callbacks(execute=True):
        retried = actions.do_retry(copy)
    assert (retried.state, retried.error, retried.bytes_done) == (DownloadState.QUEUED, "", 10)
    assert len(queued) == 1


def test_retry_of_a_ready_copy_is_refused(queued):
    with pytest.raises(DownloadRefused):
        actions.do_retry(ModelFileFactory(state=DownloadState.READY))


def test_stalled_downloads_are_requeued_by_the_agent(queued, django_capture_on_commit_callbacks):
    node = NodeFactory()
    stalled = ModelFileFactory(node=node, state=DownloadState.DOWNLOADING)
    fresh = ModelFileFactory(node=node, state=DownloadState.DOWNLOADING)
    ModelFile.objects.filter(pk=stalled.pk).update(updated_at=timezone.now() - timedelta(minutes=2))
    with django_capture_on_commit_callbacks(execute=True):
        resumed = actions.do_resume_stalled(node)
    assert [copy.pk for copy in resumed] == [stalled.pk]
    assert [args for _, args, _ in queued] == [(str(stalled.pk),)]
    assert fresh.pk not in [copy.pk for copy in resumed]
    assert actions.do_resume_stalled(node) == []  # touched: not requeued again at once


def test_download_events_are_sent_after_commit_but_not_drawn_on_the_overview(
    sent_events, django_capture_on_commit_callbacks
):
    from core import events
    from inventory import live

    with_commit = ModelFileFactory()
    with django_capture_on_commit_callbacks(execute=True):
        actions.do_cancel(with_commit)
    (event,) = [e for e in sent_events if e["kind"] == "download.changed"]
    assert event["file_id"] == str(with_commit.pk)
    assert live.render_event(events.make_event("download.changed", file_id="x")) == ""
