"""Wrong API tokens from one address: 401 up to the limit, then 429 with Retry-After."""

from __future__ import annotations

import pytest
from django.test import Client

from inventory.models import ApiToken

pytestmark = pytest.mark.django_db

BAD = {"Authorization": "Bearer gpf_not-a-real-token"}


@pytest.fixture(autouse=True)
def limit(settings):
    from django.core.cache import cache

    cache.clear()  # Redis in the cluster pass: counts would carry over from other tests
    settings.GPUFLEET_TOKEN_FAILURES = 3
    settings.GPUFLEET_TOKEN_FAILURE_WINDOW = 300.0


def _get(path: str, headers: dict[str, str], addr: str = "10.0.0.1"):
    return Client(headers=headers).get(path, REMOTE_ADDR=addr)


@pytest.mark.parametrize("path", ["/api/v1/nodes", "/metrics"])
def test_bad_tokens_get_429_with_retry_after_past_the_limit(path, viewer_user):
    assert [_get(path, BAD).status_code for _ in range(3)] == [401] * 3
    response = _get(path, BAD)
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 300
    _, raw = ApiToken.issue(viewer_user, "real")
    good = _get(path, {"Authorization": f"Bearer {raw}"})
    assert good.status_code == 429  # a right guess from a throttled address is refused too


def test_the_api_answers_429_in_its_json_error_shape():
    for _ in range(3):
        _get("/api/v1/nodes", BAD)
    response = _get("/api/v1/nodes", BAD)
    assert response["Content-Type"].startswith("application/json")
    assert "retry in" in response.json()["detail"]


def test_other_addresses_and_requests_without_a_token_are_not_throttled(viewer_user):
    for _ in range(4):
        _get("/api/v1/nodes", BAD)
    _, raw = ApiToken.issue(viewer_user, "real")
    assert _get("/api/v1/nodes", {"Authorization": f"Bearer {raw}"}, "10.0.0.2").status_code == 200
    assert _get("/api/v1/nodes", {}).status_code == 401


def test_the_window_ending_lifts_the_throttle(settings):
    settings.GPUFLEET_TOKEN_FAILURE_WINDOW = 0.5
    for _ in range(3):
        _get("/api/v1/nodes", BAD)
    assert _get("/api/v1/nodes", BAD).status_code == 429
    import time

    time.sleep(1.1)
    assert _get("/api/v1/nodes", BAD).status_code == 401
