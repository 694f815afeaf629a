"""/api/v1/models/download(s) and /api/v1/nodes/{id}/storage: requesting a download,
following it, cancel, retry, deleting the files; refusals and who may do what."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from core.units import GIB
from models_app import actions
from models_app.choices import DownloadState
from models_app.models import ModelFile
from tests.factories import CatalogModelFactory, ModelFileFactory, NodeFactory

DOWNLOAD = "/api/v1/models/download"
DOWNLOADS = "/api/v1/models/downloads"
MISSING = "00000000-0000-0000-0000-000000000000"
pytestmark = pytest.mark.django_db


@pytest.fixture
def node():
    return NodeFactory(name="gpu-a", disk_free={"/srv/models": 500 * GIB, "/data": 100 * GIB})


@pytest.fixture
def model():
    return CatalogModelFactory(hf_repo="acme/tiny-GGUF", hf_filename="tiny-Q8_0.gguf")


def post(client: Client, url: str, body: dict | None = None) -> tuple[int, dict]:
    response = client.post(url, json.dumps(body or {}), content_type="application/json")
    return response.status_code, response.json()


def request(client: Client, model, target, path: str | None = None) -> tuple[int, dict]:
    body = {"model_id": str(model.pk), "target_node": str(target)}
    if path is not None:
        body["download_path"] = path
    return post(client, DOWNLOAD, body)


# -- requesting ------------------------------------------------------------------------


def test_a_request_is_accepted_queued_and_then_shown_queued(
    operator_client, node, model, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        status, body = request(operator_client, model, node.pk)
    assert status == 202, body
    assert body["state"] == "queued"
    assert body["path"] == "/srv/models/acme__tiny-GGUF/tiny-Q8_0.gguf"
    assert (body["node_name"], body["model_name"]) == ("gpu-a", model.display_name)
    assert queued == [(actions.TASK, (body["id"],), "gpu-a")]
    shown = operator_client.get(f"{DOWNLOADS}/{body['id']}").json()
    assert (shown["state"], shown["bytes_total"], shown["percent"]) == ("queued", 2 * GIB, 0.0)
    assert ModelFile.objects.get().requested_by.username == "operator"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("llm/tiny", "/srv/models/llm/tiny/tiny-Q8_0.gguf"), ("/data/x", "/data/x/tiny-Q8_0.gguf")],
)
def test_the_node_may_be_named_and_the_path_chosen(
    operator_client, node, model, queued, path, expected
):
    status, body = request(operator_client, model, "gpu-a", path)
    assert status == 202, body
    assert body["path"] == expected


def test_the_same_model_twice_on_a_node_is_a_409_naming_the_existing_copy(
    operator_client, node, model, queued
):
    _, first = request(operator_client, model, node.pk)
    status, body = request(operator_client, model, node.pk, "elsewhere")
    assert status == 409
    assert body["existing_id"] == first["id"]
    assert ModelFile.objects.count() == 1


@pytest.mark.parametrize("path", ["../etc", "llm/../../etc", "/srv/models/../etc"])
def test_it_rejects_a_download_path_that_climbs_out_with_dot_dot(
    operator_client, node, model, queued, path
):
    status, body = request(operator_client, model, node.pk, path)
    assert status == 422
    assert [e["field"] for e in body["errors"]] == ["download_path"]
    assert "'..'" in body["errors"][0]["message"]
    assert not ModelFile.objects.exists()


@pytest.mark.parametrize("path", ["llm\u0000x", "/srv/models/a\u0000/b"])
def test_it_rejects_a_download_path_with_a_nul_character_saying_so(
    operator_client, node, model, queued, path
):
    status, body = request(operator_client, model, node.pk, path)
    assert status == 422
    (error,) = body["errors"]
    assert error["field"] == "download_path"
    assert "NUL character" in error["message"] and "'..'" not in error["message"]
    assert not ModelFile.objects.exists()


@pytest.mark.parametrize("path", ["/etc/models", "/srv/modelsx/a", "/"])
def test_it_rejects_an_absolute_download_path_outside_the_storage_roots(
    operator_client, node, model, queued, path
):
    status, body = request(operator_client, model, node.pk, path)
    assert status == 422
    (error,) = body["errors"]
    assert error["field"] == "download_path"
    assert "/srv/models, /data" in error["message"]
    assert not ModelFile.objects.exists()


@pytest.mark.parametrize("target", [MISSING, "no-such-node"])
def test_an_unknown_node_is_a_404(operator_client, model, queued, target):
    status, body = request(operator_client, model, target)
    assert status == 404
    assert "not found" in body["detail"]


def test_an_unknown_model_is_a_404(operator_client, node, queued):
    status, body = post(operator_client, DOWNLOAD, {"model_id": MISSING, "target_node": "gpu-a"})
    assert status == 404 and "not found" in body["detail"]


def test_a_disk_too_small_for_the_model_is_a_507(operator_client, model, queued):
    small = NodeFactory(disk_free={"/srv/models": model.size_bytes + GIB - 1})
    status, body = request(operator_client, model, small.pk)
    assert status == 507
    assert "Not enough disk space" in body["detail"]
    assert not ModelFile.objects.exists()


def test_a_disk_just_large_enough_is_accepted(operator_client, model, queued):
    roomy = NodeFactory(disk_free={"/srv/models": model.size_bytes + GIB})
    assert request(operator_client, model, roomy.pk)[0] == 202


def test_the_free_space_of_a_root_reported_with_a_trailing_slash_is_checked(
    operator_client, model, queued
):
    small = NodeFactory(disk_free={"/srv/models/": GIB})
    status, body = request(operator_client, model, small.pk)
    assert status == 507, body


def test_a_node_without_storage_roots_cannot_take_a_download(operator_client, model, queued):
    status, body = request(operator_client, model, NodeFactory(disk_free={}).pk)
    assert status == 422
    assert body["errors"][0]["field"] == "target_node"


# -- following -------------------------------------------------------------------------


def test_downloads_are_listed_newest_first_and_filtered(viewer_client):
    other = NodeFactory(name="gpu-b")
    old = ModelFileFactory(state=DownloadState.READY)
    new = ModelFileFactory(state=DownloadState.FAILED, node=other)
    ModelFile.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    listed = viewer_client.get(DOWNLOADS).json()
    assert [c["id"] for c in listed] == [str(new.pk), str(old.pk)]
    by = {
        "node": {"node": "gpu-b"},
        "node id": {"node": str(old.node.pk)},
        "state": {"state": "ready"},
        "model": {"model": str(new.model.pk)},
    }
    answers = {
        name: [c["id"] for c in viewer_client.get(DOWNLOADS, q).json()] for name, q in by.items()
    }
    assert answers == {
        "node": [str(new.pk)],
        "node id": [str(old.pk)],
        "state": [str(old.pk)],
        "model": [str(new.pk)],
    }


def test_filtering_by_an_unknown_node_is_a_404(viewer_client):
    assert viewer_client.get(DOWNLOADS, {"node": "nope"}).status_code == 404


def test_a_download_shows_its_progress(viewer_client):
    copy = ModelFileFactory(
        state=DownloadState.DOWNLOADING, bytes_total=4 * GIB, bytes_done=GIB, speed=1e6
    )
    body = viewer_client.get(f"{DOWNLOADS}/{copy.pk}").json()
    assert (body["state"], body["percent"], body["speed"]) == ("downloading", 25.0, 1e6)


def test_an_unknown_download_is_a_404(viewer_client):
    assert viewer_client.get(f"{DOWNLOADS}/{MISSING}").status_code == 404


# -- cancel, retry, delete -------------------------------------------------------------


@pytest.mark.parametrize("state", [DownloadState.QUEUED, DownloadState.DOWNLOADING])
def test_a_running_download_is_cancelled(operator_client, state):
    copy = ModelFileFactory(state=state, bytes_done=GIB, speed=5e6)
    response = operator_client.delete(f"{DOWNLOADS}/{copy.pk}")
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["speed"]) == ("cancelled", 0)
    copy.refresh_from_db()
    assert (copy.state, copy.bytes_done) == (DownloadState.CANCELLED, GIB)


def test_a_ready_copy_cannot_be_cancelled(operator_client):
    copy = ModelFileFactory(state=DownloadState.READY)
    response = operator_client.delete(f"{DOWNLOADS}/{copy.pk}")
    assert response.status_code == 409
    assert f"{DOWNLOADS}/{copy.pk}/files" in response.json()["detail"]
    copy.refresh_from_db()
    assert copy.state == DownloadState.READY


def test_a_failed_download_is_retried_and_queued_again(
    operator_client, queued, django_capture_on_commit_callbacks
):
    copy = ModelFileFactory(state=DownloadState.FAILED, error="boom", bytes_done=GIB)
    with django_capture_on_commit_callbacks(execute=True):
        status, body = post(operator_client, f"{DOWNLOADS}/{copy.pk}/retry")
    assert status == 200, body
    assert (body["state"], body["error"], body["bytes_done"]) == ("queued", "", GIB)
    assert queued == [(actions.TASK, (str(copy.pk),), copy.node.name)]


def test_a_ready_copy_is_not_retried(operator_client, queued):
    copy = ModelFileFactory(state=DownloadState.READY)
    status, body = post(operator_client, f"{DOWNLOADS}/{copy.pk}/retry")
    assert status == 409
    assert body["existing_id"] == str(copy.pk)
    assert queued == []


def test_a_retry_is_refused_while_another_copy_of_the_model_holds_the_node(operator_client, queued):
    cancelled = ModelFileFactory(state=DownloadState.CANCELLED)
    holder = ModelFileFactory(
        model=cancelled.model, node=cancelled.node, path="/srv/models/other/x.gguf"
    )
    status, body = post(operator_client, f"{DOWNLOADS}/{cancelled.pk}/retry")
    assert (status, body["existing_id"]) == (409, str(holder.pk))


@pytest.mark.parametrize("state", [DownloadState.READY, DownloadState.DOWNLOADING])
def test_deleting_the_files_is_accepted_and_the_copy_shows_deleting(
    operator_client, queued, django_capture_on_commit_callbacks, state
):
    copy = ModelFileFactory(state=state)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.delete(f"{DOWNLOADS}/{copy.pk}/files")
    assert response.status_code == 202
    assert response.json()["state"] == "deleting"
    assert queued == [(actions.DELETE_TASK, (str(copy.pk),), copy.node.name)]
    assert operator_client.get(f"{DOWNLOADS}/{copy.pk}").json()["state"] == "deleting"


def test_files_already_being_deleted_are_not_deleted_twice(operator_client, queued):
    copy = ModelFileFactory(state=DownloadState.DELETING)
    response = operator_client.delete(f"{DOWNLOADS}/{copy.pk}/files")
    assert response.status_code == 409
    assert queued == []


# -- who may do what -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("POST", None), ("DELETE", ""), ("POST", "/retry"), ("DELETE", "/files")],
)
def test_viewers_may_not_change_downloads(viewer_client, node, model, queued, method, suffix):
    copy = ModelFileFactory(state=DownloadState.FAILED)
    url = DOWNLOAD if suffix is None else f"{DOWNLOADS}/{copy.pk}{suffix}"
    body = {"model_id": str(model.pk), "target_node": "gpu-a"}
    response = viewer_client.generic(method, url, json.dumps(body), "application/json")
    assert response.status_code == 403
    assert "Only operators" in response.json()["detail"]
    assert list(ModelFile.objects.values_list("state", flat=True)) == [DownloadState.FAILED]
    assert queued == []


@pytest.mark.parametrize("url", [DOWNLOADS, f"/api/v1/nodes/{MISSING}/storage"])
def test_anonymous_callers_get_a_401(anon_client, url):
    response = anon_client.get(url)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json; charset=utf-8"


# -- storage ---------------------------------------------------------------------------


def test_a_nodes_storage_lists_its_roots_with_free_and_used_bytes_and_copies(viewer_client, node):
    ready = ModelFileFactory(node=node, state=DownloadState.READY, bytes_total=3 * GIB)
    partial = ModelFileFactory(
        node=node,
        storage_root="/data",
        path="/data/p/p.gguf",
        state=DownloadState.CANCELLED,
        bytes_total=8 * GIB,
        bytes_done=GIB,
    )
    response = viewer_client.get(f"/api/v1/nodes/{node.pk}/storage")
    assert response.status_code == 200
    assert [
        (r["root"], r["free_bytes"], r["used_bytes"], [c["id"] for c in r["copies"]])
        for r in response.json()
    ] == [
        ("/srv/models", 500 * GIB, 3 * GIB, [str(ready.pk)]),
        ("/data", 100 * GIB, GIB, [str(partial.pk)]),
    ]


def test_the_storage_of_an_unknown_node_is_a_404(viewer_client):
    assert viewer_client.get(f"/api/v1/nodes/{MISSING}/storage").status_code == 404
