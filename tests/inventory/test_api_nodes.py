"""GET /api/v1/nodes and /api/v1/nodes/{id}."""

from __future__ import annotations

import uuid

from tests.factories import GpuFactory, NodeFactory


def test_node_list_shows_every_node_with_its_present_gpu_count(viewer_client, gpus):
    GpuFactory(node=gpus[0].node, index=5, present=False)
    NodeFactory(name="node-b")
    response = viewer_client.get("/api/v1/nodes")
    assert response.status_code == 200
    counts = {n["name"]: n["gpu_count"] for n in response.json()}
    assert counts == {"node-a": 2, "node-b": 0}


def test_node_detail_includes_its_gpus(viewer_client, node, gpus):
    response = viewer_client.get(f"/api/v1/nodes/{node.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(node.pk)
    assert body["status"] == "online"
    assert [g["index"] for g in body["gpus"]] == [0, 1]
    assert body["gpus"][0]["node_name"] == "node-a"


def test_unknown_node_is_a_404_json_answer(viewer_client, db):
    missing = uuid.uuid4()
    response = viewer_client.get(f"/api/v1/nodes/{missing}")
    assert response.status_code == 404
    assert str(missing) in response.json()["detail"]


def test_malformed_node_id_is_a_422_naming_the_path_parameter(viewer_client, db):
    response = viewer_client.get("/api/v1/nodes/not-a-uuid")
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["node_id"]
