"""Who may call the REST API: bearer tokens, the browser session, nobody else."""

from __future__ import annotations

import json

from django.test import Client

from inventory.models import ApiToken, Gpu
from tests.factories import UserFactory


def bearer_client(user, **kwargs) -> Client:
    _, raw = ApiToken.issue(user, "test")
    return Client(headers={"Authorization": f"Bearer {raw}"}, **kwargs)


def test_bearer_token_reads_the_api(viewer_user, node):
    response = bearer_client(viewer_user).get("/api/v1/nodes")
    assert response.status_code == 200
    assert [n["name"] for n in response.json()] == ["node-a"]


def test_wrong_bearer_token_gets_401_json(node):
    client = Client(headers={"Authorization": "Bearer gpf_not-a-real-token"})
    response = client.get("/api/v1/nodes")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert "Bearer" in response.json()["detail"]


def test_anonymous_gets_401_json_not_the_login_redirect(anon_client, node):
    response = anon_client.get("/api/v1/nodes")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "detail" in response.json()


def test_logged_in_session_reads_the_api(viewer_client, node):
    assert viewer_client.get("/api/v1/nodes").status_code == 200


def test_token_of_an_inactive_user_is_refused(node):
    user = UserFactory(is_active=False)
    assert bearer_client(user).get("/api/v1/nodes").status_code == 401


def test_token_use_is_recorded(viewer_user, node):
    token, raw = ApiToken.issue(viewer_user, "ci")
    Client(headers={"Authorization": f"Bearer {raw}"}).get("/api/v1/nodes")
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_session_patch_without_csrf_token_is_refused_and_changes_nothing(operator_user, gpu):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)
    response = client.patch(
        f"/api/v1/gpus/{gpu.pk}", json.dumps({"priority": 90}), content_type="application/json"
    )
    assert response.status_code == 403
    assert Gpu.objects.get(pk=gpu.pk).priority == gpu.priority


def test_bearer_patch_needs_no_csrf_token(operator_user, gpu):
    client = bearer_client(operator_user, enforce_csrf_checks=True)
    response = client.patch(
        f"/api/v1/gpus/{gpu.pk}", json.dumps({"priority": 90}), content_type="application/json"
    )
    assert response.status_code == 200
    assert Gpu.objects.get(pk=gpu.pk).priority == 90


def test_wrong_bearer_token_on_a_patch_gets_401_not_a_csrf_error(gpu):
    client = Client(enforce_csrf_checks=True, headers={"Authorization": "Bearer gpf_wrong"})
    response = client.patch(
        f"/api/v1/gpus/{gpu.pk}", json.dumps({"priority": 90}), content_type="application/json"
    )
    assert response.status_code == 401
