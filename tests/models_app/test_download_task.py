"""The worker's download task against the local fake hub: finish, resume, cancel, fail."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from core.units import MIB
from models_app import actions, tasks
from models_app.choices import DownloadState, SourceKind
from models_app.models import ModelFile
from tests.factories import CatalogModelFactory, ModelFileFactory
from tests.models_app.conftest import hub_copy

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_queued_download_ends_ready_with_the_hubs_sha256(hub, storage_root):
    data = os.urandom(3 * MIB)
    hub.add_repo("acme/tiny-GGUF", {"tiny-Q8_0.gguf": data})
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"tiny-Q8_0.gguf": data})

    outcome = tasks.download_model_file(str(copy.pk))

    copy.refresh_from_db()
    assert copy.state == DownloadState.READY, (outcome, copy.error)
    assert copy.sha256 == hashlib.sha256(data).hexdigest()
    assert copy.bytes_done == copy.bytes_total == len(data)
    assert Path(copy.path).read_bytes() == data
    assert copy.attempts == 1 and copy.finished_at is not None


def test_a_split_model_downloads_every_shard_into_one_copy(hub, storage_root):
    shards = {f"q8/m-0000{i}-of-00003.gguf": os.urandom(MIB + i) for i in (1, 2, 3)}
    hub.add_repo("acme/split-GGUF", shards)
    copy = hub_copy(storage_root, "acme/split-GGUF", shards)

    tasks.download_model_file(str(copy.pk))

    copy.refresh_from_db()
    assert copy.state == DownloadState.READY, copy.error
    assert copy.bytes_done == sum(len(d) for d in shards.values())
    for name, data in shards.items():
        assert (storage_root / "m" / name).read_bytes() == data


def test_a_file_missing_on_the_hub_fails_with_the_hubs_reason(hub, storage_root):
    hub.add_repo("acme/tiny-GGUF", {"other.gguf": b"x" * 10})
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"gone.gguf": b"x" * 10})

    tasks.download_model_file(str(copy.pk))

    copy.refresh_from_db()
    assert copy.state == DownloadState.FAILED
    assert "gone.gguf" in copy.error and "not" in copy.error.lower()


def test_a_copy_outside_this_nodes_storage_roots_fails_without_writing(hub, storage_root, tmp_path):
    data = os.urandom(MIB)
    hub.add_repo("acme/tiny-GGUF", {"t.gguf": data})
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"t.gguf": data})
    elsewhere = tmp_path / "elsewhere"
    ModelFile.objects.filter(pk=copy.pk).update(
        storage_root=str(elsewhere), path=str(elsewhere / "t.gguf")
    )

    tasks.download_model_file(str(copy.pk))

    copy.refresh_from_db()
    assert copy.state == DownloadState.FAILED
    assert "not a storage root of this node" in copy.error
    assert not elsewhere.exists() and hub.requests() == []


def test_a_symlink_leaving_the_storage_root_is_refused(hub, storage_root, tmp_path):
    data = os.urandom(MIB)
    hub.add_repo("acme/tiny-GGUF", {"t.gguf": data})
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"t.gguf": data})
    outside = tmp_path / "outside"
    outside.mkdir()
    (storage_root / "m").symlink_to(outside)

    tasks.download_model_file(str(copy.pk))

    copy.refresh_from_db()
    assert copy.state == DownloadState.FAILED and "outside" in copy.error
    assert list(outside.iterdir()) == []


def test_a_url_download_with_the_wrong_sha256_fails_and_deletes_the_partial_file(hub, storage_root):
    data = os.urandom(MIB)
    repo = hub.add_repo("acme/tiny-GGUF", {"t.gguf": data})
    url = f"{hub.url}/acme/tiny-GGUF/resolve/{repo.commit}/t.gguf"
    model = CatalogModelFactory(
        source_kind=SourceKind.URL,
        hf_repo="",
        hf_filename="",
        url=url,
        files=[{"name": "t.gguf", "size": len(data), "sha256": "0" * 64}],
        size_bytes=len(data),
    )
    copy = ModelFileFactory(
        model=model, storage_root=str(storage_root), path=str(storage_root / "t" / "t.gguf")
    )

    tasks.download_model_file(str(copy.pk))

    copy.refresh_from_db()
    assert copy.state == DownloadState.FAILED
    assert "sha256 mismatch" in copy.error and "deleted" in copy.error
    assert not any((storage_root / "t").glob("t.gguf*"))


def test_a_second_delivery_of_a_finished_download_does_nothing(hub, storage_root):
    data = os.urandom(MIB)
    hub.add_repo("acme/tiny-GGUF", {"t.gguf": data})
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"t.gguf": data})
    tasks.download_model_file(str(copy.pk))
    served = hub.body_bytes_served()

    assert tasks.download_model_file(str(copy.pk)).startswith("not claimable")
    assert hub.body_bytes_served() == served


def run_in_thread(copy: ModelFile) -> threading.Thread:
    thread = threading.Thread(target=tasks.download_model_file, args=(str(copy.pk),))
    thread.start()
    return thread


def wait_for(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_cancelling_stops_the_transfer_and_a_retry_resumes_from_the_kept_bytes(hub, storage_root):
    data = os.urandom(8 * MIB)
    hub.add_repo("acme/tiny-GGUF", {"t.gguf": data})
    hub.faults.rate = 4 * MIB
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"t.gguf": data})
    partial = Path(copy.path + ".partial")

    thread = run_in_thread(copy)
    wait_for(lambda: partial.exists() and partial.stat().st_size > MIB)
    actions.do_cancel(copy)
    thread.join(timeout=20)
    assert not thread.is_alive()
    copy.refresh_from_db()
    kept = partial.stat().st_size
    assert copy.state == DownloadState.CANCELLED and 0 < kept < len(data)

    hub.faults.rate = None
    actions.do_retry(copy)
    tasks.download_model_file(str(copy.pk))

    copy.refresh_from_db()
    assert copy.state == DownloadState.READY, copy.error
    resumed = hub.requests("cdn", "GET")[-1]
    assert resumed.range_start == kept
    assert Path(copy.path).read_bytes() == data


def test_progress_records_bytes_speed_and_eta_while_downloading(hub, storage_root):
    data = os.urandom(6 * MIB)
    hub.add_repo("acme/tiny-GGUF", {"t.gguf": data})
    hub.faults.rate = 3 * MIB
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"t.gguf": data})

    thread = run_in_thread(copy)

    def progressed() -> bool:
        copy.refresh_from_db()
        return copy.bytes_done > MIB and copy.speed > 0

    wait_for(progressed)
    assert copy.state == DownloadState.DOWNLOADING
    assert 0.5 * MIB < copy.speed < 12 * MIB
    assert copy.eta_seconds is not None and 0 < copy.eta_seconds < 20
    thread.join(timeout=30)
    copy.refresh_from_db()
    assert copy.state == DownloadState.READY and copy.speed == 0


def test_deleting_a_copy_removes_its_files_and_then_its_row(hub, storage_root, sent_events):
    shards = {f"q8/m-0000{i}-of-00002.gguf": os.urandom(MIB) for i in (1, 2)}
    hub.add_repo("acme/split-GGUF", shards)
    copy = hub_copy(storage_root, "acme/split-GGUF", shards)
    tasks.download_model_file(str(copy.pk))
    (storage_root / "m" / "q8" / "m-00002-of-00002.gguf.partial").write_bytes(b"left over")
    (storage_root / "keep.txt").write_text("not ours")

    copy.refresh_from_db()
    actions.do_request_delete(copy)
    outcome = tasks.delete_model_file(str(copy.pk))

    assert outcome == "deleted 3 files"
    assert not ModelFile.objects.filter(pk=copy.pk).exists()
    assert not (storage_root / "m").exists() and (storage_root / "keep.txt").exists()
    assert sent_events[-1]["kind"] == "download.changed"
