"""/api/v1/inference-keys: list (everyone), create and revoke (operators)."""

from __future__ import annotations

import json
from datetime import UTC, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from gateway.models import InferenceKey, key_digest
from inventory.models import ApiToken
from scheduling.models import Deployment
from tests.factories import CatalogModelFactory

URL = "/api/v1/inference-keys"


def bearer_client(user) -> Client:
    _, raw = ApiToken.issue(user, "test")
    return Client(headers={"Authorization": f"Bearer {raw}"})


def post(client: Client, body: dict) -> object:
    return client.post(URL, json.dumps(body), content_type="application/json")


@pytest.fixture
def operator(operator_user) -> Client:
    return bearer_client(operator_user)


@pytest.fixture
def viewer(viewer_user) -> Client:
    return bearer_client(viewer_user)


@pytest.fixture
def deployments(db) -> list[Deployment]:
    model = CatalogModelFactory()
    return [Deployment.objects.create(model=model, served_name=n) for n in ("llama-8b", "qwen")]


def test_an_operator_creates_a_key_and_gets_it_once(
    operator, deployments, sent_events, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        body = {"name": "chat", "served_names": ["qwen"], "expires_at": None}
        response = post(operator, body)
    assert response.status_code == 201
    data = response.json()
    key = InferenceKey.objects.get()
    assert data["key"].startswith("gfk_") and key.digest == key_digest(data["key"])
    assert data["id"] == str(key.pk) and data["prefix"] == key.prefix
    assert data["served_names"] == ["qwen"] and data["status"] == "active"
    assert data["created_by"] == "operator" and "digest" not in data
    assert [e["key_id"] for e in sent_events if e["kind"] == "key.changed"] == [str(key.pk)]


def test_the_list_never_holds_the_key_or_its_digest(viewer, operator_user):
    key, raw = InferenceKey.issue("ci", user=operator_user)
    response = viewer.get(URL)
    assert response.status_code == 200
    (row,) = response.json()
    assert row["name"] == "ci" and row["served_names"] == [] and row["created_by"] == "operator"
    assert "key" not in row and "digest" not in row
    assert raw not in response.content.decode() and key.digest not in response.content.decode()


def test_an_expiry_is_kept_and_naive_times_are_utc(operator, db):
    when = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
    body = {"name": "temp", "expires_at": when.astimezone(UTC).replace(tzinfo=None).isoformat()}
    assert post(operator, body).status_code == 201
    assert InferenceKey.objects.get().expires_at == when


def test_an_unknown_served_name_is_a_422_naming_the_field(operator, deployments):
    response = post(operator, {"name": "chat", "served_names": ["qwen", "gpt-9"]})
    assert response.status_code == 422
    body = response.json()
    assert [e["field"] for e in body["errors"]] == ["served_names"]
    assert "'gpt-9'" in body["errors"][0]["message"] and "served_names" in body["detail"]
    assert not InferenceKey.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "extra": 1}, "extra"),
        ({"served_names": []}, "name"),
        ({"name": 7}, "name"),
        ({"name": "x", "served_names": [1]}, "served_names.0"),
        ({"name": "x", "served_names": "qwen"}, "served_names"),
        ({"name": "x", "expires_at": 1}, "expires_at"),
        ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x" * 101}, "name"),
        ({"name": "   "}, "name"),
    ],
)
def test_bad_bodies_are_a_422_naming_the_field(operator, db, body, field):
    response = post(operator, body)
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]
    assert not InferenceKey.objects.exists()


def test_a_viewer_may_not_create_or_revoke(viewer, db):
    response = post(viewer, {"name": "mine"})
    assert response.status_code == 403 and "operators" in response.json()["detail"]
    key, _ = InferenceKey.issue("kept")
    assert viewer.delete(f"{URL}/{key.pk}").status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None and not InferenceKey.objects.filter(name="mine").exists()


def test_an_operator_revokes_a_key(operator, sent_events, django_capture_on_commit_callbacks):
    key, _ = InferenceKey.issue("old")
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.delete(f"{URL}/{key.pk}")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked" and response.json()["revoked_at"]
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert [e["key_id"] for e in sent_events if e["kind"] == "key.changed"] == [str(key.pk)]
    assert operator.delete(f"{URL}/{key.pk}").status_code == 200


def test_revoking_an_unknown_key_is_a_404(operator, db):
    response = operator.delete(f"{URL}/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404 and "not found" in response.json()["detail"]


def test_anonymous_callers_get_401(anon_client, db):
    assert anon_client.get(URL).status_code == 401
    assert post(anon_client, {"name": "x"}).status_code == 401


def test_an_inference_key_is_refused_on_the_rest_api(db):
    _, raw = InferenceKey.issue("for-v1-only")
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    response = client.get(URL)
    assert response.status_code == 401 and "detail" in response.json()
    assert client.get("/api/v1/nodes").status_code == 401
