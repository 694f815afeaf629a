"""Errors of the REST API are JSON in the API's shape (``{"detail": …}``) wherever they
arise: paths no operation matches, bodies over the upload limit; and an unknown
websocket path is refused cleanly."""

from __future__ import annotations

import json

import pytest
from channels.testing import WebsocketCommunicator

from inventory.models import ApiToken


@pytest.fixture
def token_headers(viewer_user) -> dict[str, str]:
    _, raw = ApiToken.issue(viewer_user, "test")
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/models/downloads/not-a-uuid",
        "/api/v1/models/not-a-uuid",
        "/api/v1/nodes/x/storage",
        "/api/v1/no-such-thing",
        "/api/v2/nodes",
        "/api/",
    ],
)
def test_unknown_api_paths_and_malformed_ids_are_a_json_404(viewer_client, path):
    response = viewer_client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"detail": "Not found."}


def test_unknown_api_paths_answer_json_to_anonymous_posts_too(anon_client, db):
    response = anon_client.post("/api/v1/models/downloads/x/retry", "{}", "application/json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_a_body_over_the_upload_limit_is_a_json_413(operator_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"path": "x" * 2000})
    response = operator_client.post("/api/v1/estimate", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large."}


def test_a_body_over_the_upload_limit_with_a_token_is_a_json_413(client, token_headers, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"names": ["x" * 2000]})
    response = client.patch(
        "/api/v1/deployments/00000000-0000-0000-0000-000000000000",
        body,
        content_type="application/json",
        **token_headers,
    )
    assert response.status_code == 413
    assert response.json()["detail"] == "Request body too large."


def test_validation_errors_are_bounded_whatever_the_request_held(operator_client):
    body = {f"{'k' * 5_000}{i}": 1 for i in range(200)}
    response = operator_client.post(
        "/api/v1/estimate", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 422
    answer = response.json()
    assert len(response.content) < 20_000
    assert len(answer["errors"]) <= 50
    assert all(len(error["field"]) <= 100 for error in answer["errors"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/ws/nonexistent/", "/ws/deployments/not-a-uuid/", "/"])
async def test_an_unknown_websocket_path_is_refused_without_a_traceback(path, caplog):
    from config.asgi import router

    communicator = WebsocketCommunicator(router, path, headers=[(b"origin", b"http://localhost")])
    connected, code = await communicator.connect()
    assert not connected
    assert code == 4404
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    await communicator.disconnect()


def test_the_api_root_without_its_slash_still_gains_it(viewer_client):
    response = viewer_client.get("/api/v1")
    assert response.status_code == 301 and response["Location"] == "/api/v1/"
