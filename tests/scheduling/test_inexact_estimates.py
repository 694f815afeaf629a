"""A model whose architecture has no exact graph: its estimate is an upper bound, every
page and API answer about its deployment says so, and placement keeps a larger margin
(``GPUFLEET_PLACEMENT_MARGIN_INEXACT``) free on its GPUs."""

from __future__ import annotations

import json

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse

from core.units import GIB, MIB
from devtools.tiny_gguf import write_tiny_model
from models_app.choices import DownloadState
from models_app.gguf import load_model_facts
from scheduling import fleet as fleet_module
from scheduling.models import Deployment
from tests.factories import CatalogModelFactory, ModelFileFactory

URL = "/api/v1/deployments"
CAVEAT = "upper bound: &#x27;mistral3&#x27; has no exact graph"
pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def mistral_facts(tmp_path_factory) -> dict:
    """A 7B-shaped mistral3 model (llama's tensors, an architecture not replayed exactly)."""
    from gguf import GGMLQuantizationType as Q

    path = tmp_path_factory.mktemp("facts") / "mistral.gguf"
    (written,) = write_tiny_model(
        path, header_only=True, arch="mistral3", n_layer=32, n_embd=4096, n_head=32,
        n_head_kv=8, n_ff=11008, n_ctx_train=32768, n_vocab=32000, weight_type=Q.Q8_0,
    )  # fmt: skip
    return load_model_facts(written, partial=True).to_dict()


@pytest.fixture
def mistral(fleet, mistral_facts):
    model = CatalogModelFactory(
        display_name="Mistral", facts=mistral_facts, context_length=32768, size_bytes=7 * GIB
    )
    ModelFileFactory(model=model, node=fleet["a"], state=DownloadState.READY)
    return model


def call(client: Client, method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body) if body is not None else None
    response = getattr(client, method)(url, data, content_type="application/json")
    return response.status_code, response.json()


def test_placement_keeps_the_larger_margin_for_an_inexact_model(
    settings, mistral, model_7b
) -> None:
    settings.GPUFLEET_PLACEMENT_MARGIN = 256 * MIB
    settings.GPUFLEET_PLACEMENT_MARGIN_INEXACT = 1 * GIB
    inexact = fleet_module.sizer_for(Deployment(model=mistral, served_name="m", n_ctx=4096))
    exact = fleet_module.sizer_for(Deployment(model=model_7b, served_name="s", n_ctx=4096))

    assert inexact.margin_bytes == 1 * GIB
    assert exact.margin_bytes == 256 * MIB
    need = inexact.single_gpu_need()
    assert inexact.on_gpus([need]) is not None
    assert inexact.on_gpus([need - 1]) is None  # the larger margin is what it must keep free


def test_the_inexact_margin_defaults_to_twice_the_margin() -> None:
    margin = django_settings.GPUFLEET_PLACEMENT_MARGIN
    inexact = django_settings.GPUFLEET_PLACEMENT_MARGIN_INEXACT
    assert inexact == 2 * margin


def test_the_dry_run_api_says_the_estimate_is_an_upper_bound(operator_client, mistral) -> None:
    body = {"model_id": str(mistral.pk), "served_name": "dry", "n_ctx": 8192}

    status, answer = call(operator_client, "post", f"{URL}/preview", body)

    assert status == 200 and answer["fits"] is True
    assert answer["notes"][0].startswith("upper bound: 'mistral3' has no exact graph")


def test_an_exact_model_has_no_caveat_in_the_dry_run(operator_client, fleet, model_7b) -> None:
    ModelFileFactory(model=model_7b, node=fleet["a"], state=DownloadState.READY)
    body = {"model_id": str(model_7b.pk), "served_name": "dry", "n_ctx": 8192}

    status, answer = call(operator_client, "post", f"{URL}/preview", body)

    assert status == 200 and answer["notes"] == []


def test_the_dry_run_page_shows_the_caveat_when_it_fits_and_when_it_does_not(
    operator_client, fleet, mistral
) -> None:
    small = fleet["gpus"][2]
    small.memory_used = 20 * GIB  # someone else's processes
    small.save()
    data = {
        "model": str(mistral.pk), "served_name": "m", "replicas": "1", "parallel": "1",
        "cache_type": "f16", "policy": "binpack", "priority": "50", "node_labels": "",
        "extra_options": "",
    }  # fmt: skip
    fits = operator_client.post(reverse("scheduling:preview"), {**data, "n_ctx": "8192"})
    too_big = operator_client.post(
        reverse("scheduling:preview"), {**data, "n_ctx": "8192", "only_gpus": [str(small.pk)]}
    )

    assert 'class="preview-box fits"' in fits.content.decode()
    assert CAVEAT in fits.content.decode()
    assert 'class="preview-box refused"' in too_big.content.decode()
    assert CAVEAT in too_big.content.decode()


def test_the_deployment_page_and_api_carry_the_caveat(
    operator_client, mistral, queued, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        status, body = call(
            operator_client, "post", URL, {"model_id": str(mistral.pk), "served_name": "mis"}
        )
    assert status == 201, body

    page = operator_client.get(reverse("scheduling:detail", args=[body["id"]])).content.decode()
    status, answer = call(operator_client, "get", f"{URL}/{body['id']}")

    assert body["estimate_notes"][0].startswith("upper bound: 'mistral3'")
    assert answer["estimate_notes"] == body["estimate_notes"]
    assert CAVEAT in page
