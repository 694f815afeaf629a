"""POST /api/v1/estimate: the breakdown per device and the plans, and its refusals."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from core.units import GIB
from inventory.models import ApiToken
from models_app.fetch_guard import REFUSED_MESSAGE
from tests.factories import GpuFactory, NodeFactory
from tests.gguf.http_server import serve_files

URL = "/api/v1/estimate"


def post(client: Client, body: dict) -> tuple[int, dict]:
    response = client.post(URL, json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def test_anonymous_callers_get_401(anon_client, tiny_model):
    status, _ = post(anon_client, {"path": str(tiny_model)})
    assert status == 401


def test_a_bearer_token_estimates_a_file_in_a_storage_root(viewer_user, tiny_model):
    _, raw = ApiToken.issue(viewer_user, "test")
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    status, body = post(client, {"path": "tiny-llama.gguf", "settings": {"n_ctx": 2048}})
    assert status == 200, body
    assert body["model"]["architecture"] == "llama"
    assert body["model"]["n_layer"] == 8
    assert body["n_ctx"] == 2048
    (cpu,) = body["devices"]
    assert cpu["device"] == "CPU" and cpu["is_gpu"] is False
    assert cpu["total"] == sum(
        cpu[k] for k in ("weights", "kv_cache", "compute", "output", "overhead")
    )
    # layers x (K and V) x cells x KV heads x head size (256 / 8) x 2 bytes (f16)
    assert cpu["kv_cache"] == 8 * 2 * 2048 * 2 * 32 * 2
    assert body["layers_plan"] is None and body["context_plan"] is None
    assert body["explanation"]


def test_inventory_gpus_give_a_breakdown_per_gpu_and_the_plans(viewer_client, tiny_model):
    node = NodeFactory(name="gpu-node")
    first = GpuFactory(node=node, index=0, priority=50, memory_total=24 * GIB, memory_used=0)
    second = GpuFactory(node=node, index=1, priority=60, memory_total=24 * GIB, memory_used=0)
    status, body = post(
        viewer_client,
        {"path": str(tiny_model), "gpus": [str(first.pk), str(second.pk)], "margin_bytes": 2**20},
    )
    assert status == 200, body
    labels = [(d["device"], d["label"]) for d in body["devices"]]
    assert labels == [("CUDA0", "gpu-node/gpu1"), ("CUDA1", "gpu-node/gpu0"), ("CPU", "CPU (host)")]
    assert body["devices"][0]["free_bytes"] == 23 * GIB  # 24 GiB less the 1 GiB reserve
    assert body["fits"] is True
    assert body["layers_plan"]["n_gpu_layers"] == 9
    assert body["context_plan"]["n_ctx"] == 4096
    assert body["devices"][0]["layers"] and body["devices"][1]["layers"]


def test_hypothetical_gpus_can_be_planned(viewer_client, tiny_model):
    status, body = post(viewer_client, {"path": str(tiny_model), "devices": [{"free_bytes": GIB}]})
    assert status == 200, body
    assert body["devices"][0]["label"] == "GPU 0 (hypothetical)"
    assert body["devices"][0]["free_bytes"] == GIB


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"path": "../etc/passwd"}, "path", "inside a storage root"),
        ({}, "source", "exactly one model source"),
        ({"path": "a.gguf", "url": "https://x.org/a.gguf"}, "source", "exactly one"),
        ({"path": "tiny-llama.gguf", "colour": "red"}, "colour", "Unknown field"),
        (
            {"path": "tiny-llama.gguf", "settings": {"cache_type_v": "q8_0"}},
            "settings",
            "flash attention",
        ),
        ({"path": "tiny-llama.gguf", "settings": {"n_ctx": -1}}, "settings.n_ctx", "greater"),
        ({"path": "tiny-llama.gguf", "settings": {"n_ctx": "4096"}}, "settings.n_ctx", "integer"),
        (
            {"path": "tiny-llama.gguf", "settings": {"cache_type_k": "q5_1"}},
            "settings.cache_type_k",
            "f16",
        ),
        ({"path": "tiny-llama.gguf", "devices": [{"free_bytes": 0}]}, "devices.0.free_bytes", ""),
        ({"path": "a\u0000b"}, "path", "NUL"),
        ({"hf_repo": "a/b", "hf_file": "x\u0000.gguf"}, "hf_file", "NUL"),
        (
            {"path": "tiny-llama.gguf", "settings": {"tensor_split": [1e39, 1]}},
            "settings.tensor_split.0",
            "less than or equal",
        ),
        (
            {"path": "tiny-llama.gguf", "settings": {"tensor_split": ["1", 1]}},
            "settings.tensor_split.0",
            "number",
        ),
    ],
)
def test_bad_input_gets_a_422_naming_the_field(viewer_client, tiny_model, body, field, message):
    status, answer = post(viewer_client, body)
    assert status == 422, answer
    fields = {error["field"]: error["message"] for error in answer["errors"]}
    assert field in fields, fields
    assert message in fields[field]


def test_huge_tensor_split_shares_with_gpus_are_a_422_not_a_500(viewer_client, tiny_model):
    node = NodeFactory(name="gpu-node")
    gpus = [str(GpuFactory(node=node, index=i, memory_used=0).pk) for i in range(2)]
    for split in ([1e39, 1], [3.4e38, 3.4e38]):
        body = {"path": str(tiny_model), "gpus": gpus, "settings": {"tensor_split": split}}
        status, answer = post(viewer_client, body)
        assert status == 422, answer
        assert answer["errors"][0]["field"].startswith("settings.tensor_split")


def test_an_unknown_gpu_is_a_404(viewer_client, tiny_model):
    status, body = post(
        viewer_client, {"path": str(tiny_model), "gpus": ["00000000-0000-0000-0000-000000000000"]}
    )
    assert status == 404
    assert "not found" in body["detail"]


def test_a_disabled_gpu_is_refused(viewer_client, tiny_model):
    gpu = GpuFactory(enabled=False)
    status, body = post(viewer_client, {"path": str(tiny_model), "gpus": [str(gpu.pk)]})
    assert status == 422
    assert "disabled" in body["detail"]


def test_viewers_may_not_make_the_server_fetch_urls(viewer_client):
    status, body = post(viewer_client, {"url": "http://127.0.0.1:9/a.gguf"})
    assert status == 403
    assert "operators" in body["detail"]


def test_operators_estimate_a_remote_file_by_its_header(operator_client, tiny_model):
    with serve_files(tiny_model.parent) as (base, state):
        status, body = post(operator_client, {"url": f"{base}/files/{tiny_model.name}"})
    assert status == 200, body
    assert body["model"]["n_layer"] == 8
    assert all(request.get("Range") for request in state.requests)
    assert state.bytes_served < tiny_model.stat().st_size / 4


def test_an_unreachable_url_is_a_clear_error(operator_client):
    status, body = post(operator_client, {"url": "http://127.0.0.1:9/model.gguf"})
    assert status == 422
    assert "Cannot read the model's header" in body["detail"]


def test_the_estimate_is_in_the_openapi_schema(viewer_client):
    schema = viewer_client.get("/api/v1/openapi.json").json()
    assert "post" in schema["paths"]["/api/v1/estimate"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/m.gguf",
        "http://localhost/m.gguf",
        "http://2130706433/m.gguf",
        "http://0x7f.1/m.gguf",
        "http://[::ffff:127.0.0.1]/m.gguf",
        "http://169.254.169.254/latest/meta-data/m.gguf",
        "http://10.0.0.1/m.gguf",
    ],
)
def test_a_url_to_an_address_not_fetched_from_is_a_422_naming_url(operator_client, settings, url):
    settings.GPUFLEET_FETCH_ALLOW = []
    status, answer = post(operator_client, {"url": url})
    assert status == 422, answer
    fields = {error["field"]: error["message"] for error in answer["errors"]}
    assert fields == {"url": REFUSED_MESSAGE}


def test_a_closed_port_and_an_unknown_host_read_alike(operator_client):
    messages = set()
    for url in ("http://127.0.0.1:9/model.gguf", "http://127.0.0.1:1/model.gguf"):
        status, answer = post(operator_client, {"url": url})
        assert status == 422
        messages.add(answer["errors"][0]["message"].replace(url, "URL"))
    (message,) = messages
    assert "could not be reached" in message
    assert "refused" not in message.lower() and "errno" not in message.lower()
