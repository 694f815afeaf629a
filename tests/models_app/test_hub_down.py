"""Adding a model while the Hugging Face hub is down: a clear 502 within seconds (it took
about 24 s, huggingface_hub retrying), and nothing added or lost. A hub that is slow
to answer but up still works."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import reverse

from models_app.models import CatalogModel, ModelFile
from models_app.retrying import CONNECT_TIMEOUT
from models_app.transfer import hub as hub_module
from tests.factories import CatalogModelFactory, ModelFileFactory
from tests.transfer.fakehub_http import HubHandler
from tests.transfer.unreachable import SilentServer, black_hole, closed_port

pytestmark = pytest.mark.django_db

FAST = 5.0  # seconds
REPO = "acme/tiny-GGUF"
REASONS = {
    "refused": "connection refused",
    "dropped packets": f"no connection within {CONNECT_TIMEOUT:g} s",
    "never answers": "it accepted the connection but did not answer in time",
}


@pytest.fixture(params=list(REASONS))
def down_hub(request, monkeypatch) -> Iterator[tuple[str, str]]:
    """``HF_ENDPOINT`` set to a hub that is down in one of three ways: (url, reason)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    if request.param == "never answers":
        monkeypatch.setattr(hub_module, "HUB_READ_TIMEOUT", 1.0)
        with SilentServer() as silent:
            monkeypatch.setenv("HF_ENDPOINT", silent.url)
            yield silent.url, REASONS[request.param]
        return
    with (closed_port if request.param == "refused" else black_hole)() as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield url, REASONS[request.param]


@pytest.fixture
def existing():
    """A model and a copy already in the catalog: they must survive the failed add."""
    model = CatalogModelFactory(hf_repo="acme/other-GGUF")
    ModelFileFactory(model=model)
    return model


def timed_post(client: Client, url: str, body: dict) -> tuple[int, dict, float]:
    began = time.monotonic()
    response = client.post(url, json.dumps(body), content_type="application/json")
    return response.status_code, response.json(), time.monotonic() - began


def assert_nothing_changed(existing: CatalogModel) -> None:
    assert list(CatalogModel.objects.all()) == [existing]
    assert ModelFile.objects.count() == 1
    existing.refresh_from_db()
    assert existing.hf_repo == "acme/other-GGUF"


def test_adding_a_model_answers_502_within_seconds_and_adds_nothing(
    operator_client, down_hub, existing
):
    url, reason = down_hub
    body = {"source": "hf", "hf_repo": REPO, "hf_file": "tiny-Q8_0.gguf"}

    status, answer, seconds = timed_post(operator_client, "/api/v1/models", body)

    assert status == 502
    assert seconds < FAST
    assert answer["detail"] == (
        f"{REPO} @ main: the hub ({url}) could not be reached: {reason}. Try again later."
    )
    assert_nothing_changed(existing)


def test_the_hub_listing_answers_502_within_seconds(operator_client, down_hub):
    url, reason = down_hub
    began = time.monotonic()

    response = operator_client.get("/api/v1/models/hub", {"repo": REPO})

    assert time.monotonic() - began < FAST
    assert response.status_code == 502
    assert f"the hub ({url}) could not be reached: {reason}" in response.json()["detail"]


def test_the_add_page_shows_the_reason_within_seconds(operator_client, down_hub, existing):
    _, reason = down_hub
    data = {"source": "hf", "hf_repo": REPO, "hf_file": "tiny-Q8_0.gguf", "revision": "main"}
    began = time.monotonic()

    response = operator_client.post(reverse("models_app:add"), data, HTTP_HX_REQUEST="true")

    assert time.monotonic() - began < FAST
    assert response.status_code == 200
    assert reason in response.content.decode()
    assert_nothing_changed(existing)


@pytest.mark.parametrize("down", [closed_port, black_hole])
def test_the_facts_preview_says_the_hub_cannot_be_read_within_seconds(
    operator_client, monkeypatch, down
):
    query = {"hf_repo": REPO, "hf_file": "tiny-Q8_0.gguf", "revision": "main"}
    with down() as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        began = time.monotonic()
        page = operator_client.get(reverse("models_app:facts"), query).content.decode()

    assert time.monotonic() - began < FAST
    assert "the server could not be reached" in page
    assert not CatalogModel.objects.exists()


def test_a_hub_slower_to_answer_than_to_connect_still_adds_the_model(
    operator_client, gguf_hub, monkeypatch
):
    original = HubHandler._tree

    def slow(self, match, query):
        time.sleep(CONNECT_TIMEOUT + 0.5)
        original(self, match, query)

    monkeypatch.setattr(HubHandler, "_tree", slow)
    body = {"source": "hf", "hf_repo": REPO, "hf_file": "tiny-Q8_0.gguf"}

    status, answer, _ = timed_post(operator_client, "/api/v1/models", body)

    assert status == 201, answer
    assert CatalogModel.objects.get().hf_repo == REPO
