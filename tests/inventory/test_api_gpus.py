"""GET /api/v1/gpus, GET and PATCH /api/v1/gpus/{id}."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from django.test import Client

from inventory.models import ApiToken, Gpu
from tests.factories import GIB, GpuFactory, NodeFactory


def patch(client, gpu_id, body: object, raw: bool = False):
    data = body if raw else json.dumps(body)
    return client.patch(f"/api/v1/gpus/{gpu_id}", data, content_type="application/json")


def snapshot(gpu: Gpu) -> Mapping[str, Any]:
    return Gpu.objects.values().get(pk=gpu.pk)


def fields_named(response) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


# --- reading ---------------------------------------------------------------------------


def test_gpu_list_shows_all_gpus(viewer_client, gpus):
    other = GpuFactory(node=NodeFactory(name="node-b"), index=0)
    response = viewer_client.get("/api/v1/gpus")
    assert response.status_code == 200
    assert {g["id"] for g in response.json()} == {str(g.pk) for g in [*gpus, other]}


def test_gpu_list_filters_by_node(viewer_client, node, gpus):
    GpuFactory(node=NodeFactory(name="node-b"), index=0)
    response = viewer_client.get(f"/api/v1/gpus?node={node.pk}")
    assert [g["id"] for g in response.json()] == [str(g.pk) for g in gpus]


def test_gpu_list_filtered_by_unknown_node_is_a_404(viewer_client, gpus):
    response = viewer_client.get(f"/api/v1/gpus?node={uuid.uuid4()}")
    assert response.status_code == 404
    assert "Node" in response.json()["detail"]


def test_gpu_detail_reports_memory_and_settings(viewer_client, gpu):
    body = viewer_client.get(f"/api/v1/gpus/{gpu.pk}").json()
    assert body["uuid"] == gpu.uuid
    assert body["memory_total"] == 80 * GIB
    assert body["memory_free"] == 78 * GIB
    assert (body["priority"], body["enabled"], body["reserved_override"]) == (50, True, None)
    assert body["reserved"] == gpu.reserved


def test_unknown_gpu_is_a_404_json_answer(viewer_client, db):
    response = viewer_client.get(f"/api/v1/gpus/{uuid.uuid4()}")
    assert response.status_code == 404
    assert "GPU" in response.json()["detail"]


# --- changing settings -----------------------------------------------------------------


def test_operator_changes_priority_enabled_and_reserved(operator_client, gpu):
    response = patch(
        operator_client, gpu.pk, {"priority": 80, "enabled": False, "reserved_override": 2 * GIB}
    )
    assert response.status_code == 200
    assert response.json()["reserved"] == 2 * GIB
    gpu.refresh_from_db()
    assert (gpu.priority, gpu.enabled, gpu.reserved_override) == (80, False, 2 * GIB)


def test_patch_changes_only_the_fields_sent(operator_client, gpu):
    Gpu.objects.filter(pk=gpu.pk).update(enabled=False, reserved_override=3 * GIB)
    assert patch(operator_client, gpu.pk, {"priority": 10}).status_code == 200
    gpu.refresh_from_db()
    assert (gpu.priority, gpu.enabled, gpu.reserved_override) == (10, False, 3 * GIB)


def test_patch_with_null_reserved_returns_to_the_default(operator_client, gpu):
    Gpu.objects.filter(pk=gpu.pk).update(reserved_override=3 * GIB)
    assert patch(operator_client, gpu.pk, {"reserved_override": None}).status_code == 200
    assert Gpu.objects.get(pk=gpu.pk).reserved_override is None


def test_admin_may_patch(admin_client, gpu):
    assert patch(admin_client, gpu.pk, {"priority": 60}).status_code == 200


def test_operator_token_may_patch(operator_user, gpu):
    _, raw = ApiToken.issue(operator_user, "ci")
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    assert patch(client, gpu.pk, {"enabled": False}).status_code == 200
    assert Gpu.objects.get(pk=gpu.pk).enabled is False


def test_viewer_patch_is_forbidden_and_changes_nothing(viewer_client, gpu):
    before = snapshot(gpu)
    response = patch(viewer_client, gpu.pk, {"priority": 90})
    assert response.status_code == 403
    assert "operator" in response.json()["detail"]
    assert snapshot(gpu) == before


def test_anonymous_patch_is_401_and_changes_nothing(anon_client, gpu):
    before = snapshot(gpu)
    assert patch(anon_client, gpu.pk, {"priority": 90}).status_code == 401
    assert snapshot(gpu) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"priority": 101}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"priority": "50"}, "priority"),
        ({"priority": 50.5}, "priority"),
        ({"priority": None}, "priority"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": None}, "enabled"),
        ({"reserved_override": -1}, "reserved_override"),
        ({"reserved_override": 81 * GIB}, "reserved_override"),
        ({"reserved_override": 80 * GIB}, "reserved_override"),
        ({"memory_total": 1}, "memory_total"),
        ({"priority": 60, "colour": "red"}, "colour"),
    ],
)
def test_patch_rejects_bad_input_naming_the_field_and_changes_nothing(
    operator_client, gpu, body, field
):
    before = snapshot(gpu)
    response = patch(operator_client, gpu.pk, body)
    assert response.status_code == 422
    assert fields_named(response) == [field]
    assert field in response.json()["detail"]
    assert snapshot(gpu) == before


def test_patch_rejects_priority_out_of_range_and_changes_nothing(operator_client, gpu):
    before = snapshot(gpu)
    response = patch(operator_client, gpu.pk, {"priority": 150})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "priority", "message": "Input should be less than or equal to 100"}
    ]
    assert snapshot(gpu) == before


def test_patch_rejects_reserved_above_total_with_the_model_message(operator_client, gpu):
    response = patch(operator_client, gpu.pk, {"reserved_override": 100 * GIB})
    assert response.status_code == 422
    assert response.json()["errors"][0]["message"].startswith("Reserved memory must be below")


def test_patch_rejects_unknown_fields_and_changes_nothing(operator_client, gpu):
    before = snapshot(gpu)
    response = patch(operator_client, gpu.pk, {"name": "renamed", "node": "x"})
    assert response.status_code == 422
    assert sorted(fields_named(response)) == ["name", "node"]
    assert {e["message"] for e in response.json()["errors"]} == {"Unknown field."}
    assert snapshot(gpu) == before


def test_patch_with_malformed_json_is_a_400_and_changes_nothing(operator_client, gpu):
    before = snapshot(gpu)
    response = patch(operator_client, gpu.pk, '{"priority": 10', raw=True)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
    assert snapshot(gpu) == before


@pytest.mark.parametrize("body", ["", "[1, 2]", '"priority"'])
def test_patch_without_a_json_object_is_a_422(operator_client, gpu, body):
    response = patch(operator_client, gpu.pk, body, raw=True)
    assert response.status_code == 422
    assert fields_named(response) == ["body"]


def test_patch_of_unknown_gpu_is_a_404(operator_client, db):
    response = patch(operator_client, uuid.uuid4(), {"priority": 10})
    assert response.status_code == 404
    assert "GPU" in response.json()["detail"]


def test_empty_patch_changes_nothing(operator_client, gpu):
    before = snapshot(gpu)
    response = patch(operator_client, gpu.pk, {})
    assert response.status_code == 200
    assert snapshot(gpu) == before
