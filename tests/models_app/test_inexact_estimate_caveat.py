"""The estimate page and API say when a figure is an upper bound (an architecture
without an exact graph, mistral3 here), and an encoder's estimate (bert: exact) has no KV
cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from devtools.tiny_gguf import write_tiny_model
from models_app.gguf import load_model_facts
from tests.factories import CatalogModelFactory, GpuFactory, NodeFactory

PAGE, API = "/models/estimate/", "/api/v1/estimate"
HTMX = {"HTTP_HX_REQUEST": "true"}
SETTINGS = {
    "n_ctx": 2048, "n_parallel": 1, "n_batch": 2048, "n_ubatch": 512, "cache_type_k": "f16",
    "cache_type_v": "f16", "n_gpu_layers": -1, "mmap": "on", "margin_mib": 0,
}  # fmt: skip


@pytest.fixture
def encoder(storage_root: Path) -> Path:
    (path,) = write_tiny_model(
        storage_root / "tiny-bert.gguf", arch="bert", pooling="mean", n_ctx_train=512
    )
    return path


@pytest.fixture
def inexact(storage_root: Path) -> Path:
    (path,) = write_tiny_model(storage_root / "tiny-mistral3.gguf", arch="mistral3")
    return path


def test_the_estimate_page_shows_the_upper_bound_caveat(viewer_client, inexact, tiny_model):
    bound = viewer_client.get(PAGE, {"model": str(inexact), **SETTINGS}, **HTMX).content.decode()
    exact = viewer_client.get(PAGE, {"model": str(tiny_model), **SETTINGS}, **HTMX)

    assert "<strong>Approximate:</strong> upper bound: &#x27;mistral3&#x27; has no " in bound
    assert "upper bound" not in exact.content.decode()


def test_the_estimate_api_counts_no_kv_cache_for_an_encoder_and_is_exact(viewer_client, encoder):
    response = viewer_client.post(
        API, json.dumps({"path": str(encoder), "settings": {"n_ctx": 512}}),
        content_type="application/json",
    )  # fmt: skip
    body = response.json()

    assert response.status_code == 200, body
    assert body["approximate"] is False
    assert not body["reasons"]
    (cpu,) = body["devices"]
    assert cpu["kv_cache"] == 0 and cpu["compute"] > 0


@pytest.mark.django_db
def test_the_catalog_says_a_fit_is_judged_by_an_upper_bound(viewer_client, inexact, tiny_model):
    GpuFactory(node=NodeFactory(name="gpu-node"), index=0)
    CatalogModelFactory(display_name="Mistral3", facts=load_model_facts(inexact).to_dict())
    CatalogModelFactory(display_name="Llama", facts=load_model_facts(tiny_model).to_dict())

    page = viewer_client.get(reverse("models_app:catalog")).content.decode()

    assert page.count("(an upper bound: no exact graph for this architecture)") == 1
