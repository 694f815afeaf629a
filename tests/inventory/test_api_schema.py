"""The OpenAPI schema and the interactive docs."""

from __future__ import annotations

import json

import pytest


def json_text(value: object) -> str:
    return json.dumps(value)


@pytest.fixture
def schema(anon_client) -> dict:
    response = anon_client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_openapi_schema_lists_the_inventory_operations(schema):
    paths = schema["paths"]
    assert set(paths["/api/v1/gpus/{gpu_id}"]) == {"get", "patch"}
    for path in ("/api/v1/nodes", "/api/v1/nodes/{node_id}", "/api/v1/gpus"):
        assert "get" in paths[path]
    assert "get" in paths["/api/v1/gpus/{gpu_id}/samples"]


def test_schema_uses_uuids_in_paths(schema):
    params = schema["paths"]["/api/v1/gpus/{gpu_id}"]["get"]["parameters"]
    assert params[0]["schema"]["format"] == "uuid"


def test_schema_says_how_many_samples_come_back(schema):
    operation = schema["paths"]["/api/v1/gpus/{gpu_id}/samples"]["get"]
    assert "5000" in operation["description"]
    resolution = next(p for p in operation["parameters"] if p["name"] == "resolution")
    assert "900" in json_text(resolution)


def test_schema_declares_bearer_and_session_auth(schema):
    schemes = schema["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} >= {"http", "apiKey"}
    assert any(s.get("scheme") == "bearer" for s in schemes.values())


def test_patch_schema_names_the_settings_and_their_range(schema):
    body = schema["components"]["schemas"]["GpuSettingsIn"]
    assert set(body["properties"]) == {"priority", "enabled", "reserved_override"}
    assert body["additionalProperties"] is False
    assert "100" in json_text(body["properties"]["priority"])


def test_docs_page_is_served_to_a_logged_in_user(viewer_client):
    response = viewer_client.get("/api/v1/docs")
    assert response.status_code == 200
    assert b"openapi.json" in response.content


def test_docs_page_sends_anonymous_users_to_the_login_page(anon_client):
    response = anon_client.get("/api/v1/docs")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
