"""/api/v1/usage: totals per served name and per key over a window, optionally filtered."""

from __future__ import annotations

import pytest
from django.test import Client

from inventory.models import ApiToken
from tests.gateway.test_usage_views import usage  # noqa: F401  (the fixture)

URL = "/api/v1/usage"


@pytest.fixture
def client(viewer_user) -> Client:
    _, raw = ApiToken.issue(viewer_user, "test")
    return Client(headers={"Authorization": f"Bearer {raw}"})


def by(rows: list[dict], field: str) -> dict:
    return {row[field]: row for row in rows}


def test_the_last_hour_per_served_name_and_key(client, usage):  # noqa: F811
    response = client.get(URL, {"window": "1h"})
    assert response.status_code == 200
    data = response.json()
    assert data["window"] == "1h"
    assert data["totals"] == {
        "requests": 20, "errors": 3, "prompt_tokens": 200, "completion_tokens": 340,
        "mean_ttft_ms": round(1800 / 17, 1), "mean_queue_ms": 0.0, "cold_starts": 2,
    }  # fmt: skip
    assert [r["served_name"] for r in data["served_names"]] == ["llama-8b", "qwen"]
    llama = by(data["served_names"], "served_name")["llama-8b"]
    assert (llama["requests"], llama["errors"], llama["completion_tokens"]) == (14, 1, 280)
    keys = by(data["keys"], "name")
    assert keys["alpha"]["key_id"] == str(usage["alpha"].pk)
    assert keys["alpha"]["prefix"] == usage["alpha"].prefix
    assert (keys["alpha"]["requests"], keys["beta"]["requests"]) == (16, 4)
    assert keys["beta"]["mean_ttft_ms"] == 50.0


def test_the_default_window_is_24_hours_and_7_days_leaves_out_older_rows(client, usage):  # noqa: F811
    data = client.get(URL).json()
    assert data["window"] == "24h" and data["totals"]["requests"] == 120
    assert by(data["keys"], "name")["beta"]["requests"] == 104
    assert client.get(URL, {"window": "7d"}).json()["totals"]["requests"] == 120


def test_filters_by_served_name_and_key(client, usage):  # noqa: F811
    data = client.get(URL, {"window": "24h", "served_name": "qwen"}).json()
    assert [r["served_name"] for r in data["served_names"]] == ["qwen"]
    assert data["totals"]["requests"] == 106
    data = client.get(URL, {"key_id": str(usage["beta"].pk)}).json()
    assert [r["name"] for r in data["keys"]] == ["beta"] and data["totals"]["requests"] == 104
    data = client.get(URL, {"served_name": "qwen", "key_id": str(usage["alpha"].pk)}).json()
    assert data["totals"]["requests"] == 6


def test_an_unknown_window_is_a_422_naming_it(client, db):
    response = client.get(URL, {"window": "2h"})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["window"]


def test_an_unknown_key_is_a_404(client, db):
    response = client.get(URL, {"key_id": "00000000-0000-0000-0000-000000000000"})
    assert response.status_code == 404


def test_no_rows_give_zero_totals(client, db):
    data = client.get(URL).json()
    assert data["totals"]["requests"] == 0 and data["totals"]["mean_ttft_ms"] is None
    assert data["served_names"] == [] and data["keys"] == []


def test_anonymous_callers_get_401(anon_client, db):
    assert anon_client.get(URL).status_code == 401
