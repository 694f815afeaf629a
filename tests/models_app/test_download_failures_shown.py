"""Issue 12 item 11, the download parts: what a failing or retrying copy says, on the
page and in the API, and what its delete leaves on disk (the fake hub injects faults)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.urls import reverse

from core.units import MIB
from models_app import actions, tasks
from models_app.choices import DownloadState, SourceKind
from models_app.models import ModelFile
from models_app.transfer import RetryPolicy
from tests.factories import CatalogModelFactory, ModelFileFactory
from tests.models_app.conftest import hub_copy

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_404_without_a_reason_from_the_hub_says_not_found_on_the_hub(hub, storage_root):
    hub.add_repo("acme/tiny-GGUF", {"t.gguf": b"x" * 10})
    hub.faults.head_fail_times = 1
    hub.faults.fail_status = 404
    hub.faults.bare_errors = True  # no X-Error-Code, no message: what a proxy answers
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"t.gguf": b"x" * 10})

    tasks.download_model_file(str(copy.pk))

    copy.refresh_from_db()
    assert copy.state == DownloadState.FAILED
    assert "not found on the hub" in copy.error
    assert "acme/tiny-GGUF" in copy.error and "t.gguf" in copy.error
    assert not copy.error.rstrip().endswith(":")


def failed_at_98_9_percent(root: Path) -> ModelFile:
    copy = hub_copy(root, "acme/tiny-GGUF", {"t.gguf": bytes(1000)})
    ModelFile.objects.filter(pk=copy.pk).update(
        state=DownloadState.DOWNLOADING, bytes_done=989, bytes_total=1000, speed=5e6
    )
    copy.refresh_from_db()
    ModelFile.objects.filter(pk=copy.pk).update(eta_seconds=0.005)
    actions.do_fail(copy, "boom")
    copy.refresh_from_db()
    return copy


def test_a_failed_copy_shows_no_eta_or_speed_and_its_progress_as_stopped_at(
    storage_root, operator_client
):
    copy = failed_at_98_9_percent(storage_root)
    assert copy.eta_seconds is None and copy.speed == 0
    assert copy.bytes_done == 989  # kept for a resume

    body = operator_client.get(f"/api/v1/models/downloads/{copy.pk}").json()
    assert body["progress"] == "stopped at 98.9 %"
    assert body["eta_seconds"] is None and body["speed"] == 0
    assert body["bytes_done"] == 989

    page = operator_client.get(reverse("models_app:downloads")).content.decode()
    assert "stopped at 98.9 %" in page


def test_a_cancelled_copy_with_stale_figures_shows_no_eta_or_speed(storage_root, operator_client):
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"t.gguf": bytes(1000)})
    ModelFile.objects.filter(pk=copy.pk).update(
        state=DownloadState.CANCELLED, bytes_done=500, bytes_total=1000, speed=9.0, eta_seconds=3
    )
    body = operator_client.get(f"/api/v1/models/downloads/{copy.pk}").json()
    assert body["progress"] == "stopped at 50.0 %"
    assert body["eta_seconds"] is None and body["speed"] == 0


def test_connection_retries_show_retrying_with_reason_and_attempt_then_clear(
    hub, storage_root, operator_client, monkeypatch
):
    data = os.urandom(2 * MIB)
    hub.add_repo("acme/tiny-GGUF", {"t.gguf": data})
    hub.faults.fail_times = 2
    hub.faults.fail_status = 503
    copy = hub_copy(storage_root, "acme/tiny-GGUF", {"t.gguf": data})
    seen: list[str] = []

    def sleep(seconds: float) -> None:  # the worker's backoff: look at the row meanwhile
        row = ModelFile.objects.get(pk=copy.pk)
        seen.append(row.retrying)
        api = operator_client.get(f"/api/v1/models/downloads/{copy.pk}").json()
        seen.append(api["retrying"])
        page = operator_client.get(reverse("models_app:downloads")).content.decode()
        seen.append("retrying: " if "retrying: " in page else "")

    policy = RetryPolicy(attempts=4, jitter=False, sleep=sleep)
    original = tasks.DownloadOptions

    def options(**kwargs):
        return original(retry=policy, **kwargs)

    monkeypatch.setattr(tasks, "DownloadOptions", options)

    tasks.download_model_file(str(copy.pk))

    assert seen[0].startswith("retrying: ") and "HTTP 503" in seen[0]
    assert seen[0].endswith("attempt 2 of 4")
    assert seen[1] == seen[0]
    assert seen[2] == "retrying: "
    assert ModelFile.objects.get(pk=copy.pk).retrying == ""  # cleared when bytes flowed
    assert ModelFile.objects.get(pk=copy.pk).state == DownloadState.READY


def test_deleting_a_corrupt_download_removes_its_empty_directory(hub, storage_root):
    data = os.urandom(MIB)
    repo = hub.add_repo("acme/tiny-GGUF", {"t.gguf": data})
    hub.faults.corrupt_offset = 1000
    url = f"{hub.url}/acme/tiny-GGUF/resolve/{repo.commit}/t.gguf"
    model = CatalogModelFactory(
        source_kind=SourceKind.URL,
        hf_repo="",
        hf_filename="",
        url=url,
        files=[{"name": "t.gguf", "size": len(data), "sha256": ""}],
        size_bytes=len(data),
    )
    copy = ModelFileFactory(
        model=model,
        storage_root=str(storage_root),
        path=str(storage_root / "acme" / "t" / "t.gguf"),
    )
    (storage_root / "other").mkdir()
    tasks.download_model_file(str(copy.pk))
    copy.refresh_from_db()
    assert copy.state == DownloadState.FAILED and "sha256" in copy.error.lower()

    actions.do_request_delete(copy)
    tasks.delete_model_file(str(copy.pk))

    assert not (storage_root / "acme").exists()
    assert storage_root.is_dir() and (storage_root / "other").is_dir()
