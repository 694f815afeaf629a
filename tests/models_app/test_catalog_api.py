"""/api/v1/models: listing, the hub listing, adding (hub and URL), one model with its
fits, removing; who may do what."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from core.units import GIB
from models_app.choices import DownloadState
from models_app.fetch_guard import REFUSED_MESSAGE
from models_app.models import CatalogModel
from tests.factories import CatalogModelFactory, GpuFactory, ModelFileFactory, NodeFactory

URL = "/api/v1/models"
REPO = "acme/tiny-GGUF"
pytestmark = pytest.mark.django_db


def post(client: Client, body: dict, url: str = URL) -> tuple[int, dict]:
    response = client.post(url, json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def hf(filename: str = "tiny-Q8_0.gguf", repo: str = REPO, **extra) -> dict:
    return {"source": "hf", "hf_repo": repo, "hf_file": filename, **extra}


def fields(body: dict) -> dict[str, str]:
    return {error["field"]: error["message"] for error in body["errors"]}


# -- who may do what -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", URL), ("get", f"{URL}/hub?repo={REPO}"), ("post", URL)],
)
def test_anonymous_callers_get_a_401_json_answer(anon_client, method, path):
    response = getattr(anon_client, method)(path, content_type="application/json")
    assert response.status_code == 401
    assert "Authentication required" in response.json()["detail"]


def test_viewers_read_the_catalog(viewer_client):
    CatalogModelFactory(display_name="B model")
    CatalogModelFactory(display_name="A model", hf_repo="acme/a-GGUF", revision="v1")
    response = viewer_client.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert [m["display_name"] for m in body] == ["A model", "B model"]
    assert body[0]["source"] == "acme/a-GGUF/tiny-Q8_0.gguf@v1"


@pytest.mark.parametrize(
    ("method", "path", "what"),
    [
        ("post", URL, "add models"),
        ("get", f"{URL}/hub?repo={REPO}", "browse the hub"),
        ("delete", f"{URL}/{{pk}}", "remove models"),
    ],
)
def test_viewers_may_not_write_or_make_the_server_reach_the_hub(
    viewer_client, gguf_hub, method, path, what
):
    model = CatalogModelFactory()
    response = viewer_client.generic(
        method.upper(), path.format(pk=model.pk), json.dumps(hf()), "application/json"
    )
    assert response.status_code == 403
    assert what in response.json()["detail"]
    assert CatalogModel.objects.count() == 1
    assert gguf_hub.hub.requests() == []


# -- the hub listing -------------------------------------------------------------------


def test_the_hub_listing_groups_the_shards_of_a_split_model(operator_client, gguf_hub):
    response = operator_client.get(f"{URL}/hub", {"repo": REPO})
    assert response.status_code == 200, response.json()
    by_name = {entry["name"]: entry for entry in response.json()}
    assert set(by_name) == {"tiny-Q8_0.gguf", "split/big.gguf"}
    assert by_name["split/big.gguf"] == {
        "name": "split/big.gguf",
        "first": "split/big-00001-of-00003.gguf",
        "shards": 3,
        "size": sum(path.stat().st_size for path in gguf_hub.shards),
        "complete": True,
    }


def test_the_hub_listing_says_when_a_split_model_lacks_shards(operator_client, gguf_hub):
    response = operator_client.get(f"{URL}/hub", {"repo": "acme/incomplete-GGUF"})
    assert [(e["shards"], e["complete"]) for e in response.json()] == [(2, False)]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"repo": "acme/nope"}, 404),
        ({"repo": REPO, "revision": "v9"}, 404),
        ({"repo": "acme/gated-GGUF"}, 403),
    ],
)
def test_the_hub_listing_passes_on_the_hubs_refusal(operator_client, gguf_hub, query, status):
    response = operator_client.get(f"{URL}/hub", query)
    assert response.status_code == status
    assert response.json()["detail"]


def test_an_invalid_repo_id_in_the_hub_listing_names_the_repo_parameter(operator_client, gguf_hub):
    response = operator_client.get(f"{URL}/hub", {"repo": "not a repo!"})
    assert response.status_code == 422
    assert "invalid repo id" in fields(response.json())["repo"]


# -- adding ----------------------------------------------------------------------------


def test_an_operator_adds_a_split_hub_model_with_every_shard(operator_client, gguf_hub):
    status, body = post(operator_client, hf("split/big-00002-of-00003.gguf"))
    assert status == 201, body
    assert [f["name"] for f in body["files"]] == [
        f"split/big-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]
    assert [f["size"] for f in body["files"]] == [p.stat().st_size for p in gguf_hub.shards]
    assert all(len(f["sha256"]) == 64 for f in body["files"])
    assert body["commit"] == gguf_hub.hub.repos[REPO].commit
    assert (body["architecture"], body["context_length"]) == ("llama", 4096)
    model = CatalogModel.objects.get(pk=body["id"])
    assert model.created_by.username == "operator"


def test_an_added_model_says_which_gpus_could_hold_it(operator_client, gguf_hub):
    node = NodeFactory(name="gpu-a")
    GpuFactory(node=node, index=0, memory_total=24 * GIB, memory_used=0)
    GpuFactory(node=node, index=1, memory_total=24 * GIB, memory_used=24 * GIB)
    status, body = post(operator_client, hf())
    assert status == 201, body
    (fit,) = body["fits"]
    assert (fit["node"], fit["gpus"], fit["split_over"]) == ("gpu-a", ["gpu0"], 0)
    assert 0 < fit["needed_bytes"] < 24 * GIB


def test_a_url_model_is_added(operator_client, gguf_hub):
    url = gguf_hub.resolve_url(REPO, "tiny-Q8_0.gguf")
    status, body = post(operator_client, {"source": "url", "url": url, "display_name": "Tiny"})
    assert status == 201, body
    assert (body["source_kind"], body["source"], body["display_name"]) == ("url", url, "Tiny")
    assert body["size_bytes"] == gguf_hub.single.stat().st_size


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (hf(repo="not a repo!"), "hf_repo", "invalid repo id"),
        (hf(filename=""), "hf_file", "This field is required."),
        (hf(repo="acme/incomplete-GGUF", filename="split/big.gguf"), "hf_file", "lacks shards"),
        ({"source": "url", "url": "https://example.org/m.bin"}, "url", ".gguf file"),
        ({"source": "url", "url": "https://x.org/m.gguf", "sha256": "xyz"}, "sha256", "64"),
        ({"source": "git"}, "source", ""),
        (hf(colour="red"), "colour", "Unknown field."),
    ],
)
def test_bad_input_gets_a_422_naming_the_field(operator_client, gguf_hub, body, field, message):
    status, answer = post(operator_client, body)
    assert status == 422, answer
    assert message in fields(answer)[field]
    assert not CatalogModel.objects.exists()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (hf(repo="acme/nope"), 404),
        (hf(filename="nope.gguf"), 404),
        (hf(revision="v9"), 404),
        (hf(repo="acme/gated-GGUF", filename="gated.gguf"), 403),
    ],
)
def test_a_source_the_hub_refuses_gets_the_hubs_status(operator_client, gguf_hub, body, status):
    answer_status, answer = post(operator_client, body)
    assert answer_status == status, answer
    assert "errors" not in answer and answer["detail"]
    assert not CatalogModel.objects.exists()


def test_the_same_model_twice_is_a_409_naming_the_existing_one(operator_client, gguf_hub):
    _, first = post(operator_client, hf("split/big-00001-of-00003.gguf"))
    status, body = post(operator_client, hf("split/big-00003-of-00003.gguf"))
    assert status == 409
    assert body["existing_id"] == first["id"]
    assert "already in the catalog" in body["detail"]


# -- one model, removing ---------------------------------------------------------------


def test_one_model_is_shown_with_its_fits_per_node(viewer_client, gguf_hub):
    from models_app.catalog import add_hf_model
    from models_app.fleet_fit import node_fits

    model = add_hf_model(REPO, "tiny-Q8_0.gguf")
    NodeFactory(name="empty")  # no GPUs: not listed
    GpuFactory(node=NodeFactory(name="full"), index=0, memory_total=8 * GIB, memory_used=8 * GIB)
    GpuFactory(node=NodeFactory(name="roomy"), index=3, memory_total=8 * GIB, memory_used=0)
    needed = node_fits(model)[0].needed
    response = viewer_client.get(f"{URL}/{model.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(model.pk) and body["quantization"] == "Q8_0"
    assert sorted(body["fits"], key=lambda fit: fit["node"]) == [
        {"node": "full", "gpus": [], "split_over": 0, "needed_bytes": needed},
        {"node": "roomy", "gpus": ["gpu3"], "split_over": 0, "needed_bytes": needed},
    ]


def test_an_unknown_model_is_a_404(viewer_client):
    response = viewer_client.get(f"{URL}/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


def test_an_operator_removes_a_model_no_node_holds(operator_client):
    model = CatalogModelFactory()
    response = operator_client.delete(f"{URL}/{model.pk}")
    assert response.status_code == 204
    assert not CatalogModel.objects.exists()


@pytest.mark.parametrize("state", [DownloadState.READY, DownloadState.FAILED])
def test_a_model_with_copies_on_nodes_is_not_removed(operator_client, state):
    copy = ModelFileFactory(state=state)
    response = operator_client.delete(f"{URL}/{copy.model.pk}")
    assert response.status_code == 409
    assert "1 copies" in response.json()["detail"]
    assert CatalogModel.objects.filter(pk=copy.model.pk).exists()


# -- a path already on a node ------------------------------------------------------------


@pytest.fixture
def local_node(storage_root):
    return NodeFactory(name="local", disk_free={str(storage_root): 100 * GIB})


def test_a_model_on_a_nodes_disk_is_added_with_its_facts(operator_client, local_node, tiny_model):
    body = {"source": "path", "node": "local", "path": str(tiny_model)}
    status, added = post(operator_client, body)
    assert status == 201, added
    assert (added["source_kind"], added["architecture"]) == ("path", "llama")
    assert added["files"] == [
        {"name": tiny_model.name, "size": tiny_model.stat().st_size, "sha256": ""}
    ]
    status, again = post(operator_client, body)
    assert status == 409 and again["existing_id"] == added["id"]


def test_a_path_outside_the_nodes_storage_roots_is_refused(operator_client, local_node, tmp_path):
    outside = tmp_path / "elsewhere.gguf"
    outside.write_bytes(b"GGUF")
    status, body = post(operator_client, {"source": "path", "node": "local", "path": str(outside)})
    assert status == 422 and "storage root of local" in fields(body)["path"]
    sneaky = f"{local_node.disk_free and next(iter(local_node.disk_free))}/../elsewhere.gguf"
    status, body = post(operator_client, {"source": "path", "node": "local", "path": sneaky})
    assert status == 422 and "path" in fields(body)
    assert not CatalogModel.objects.exists()


def test_a_path_model_needs_a_known_node_and_a_file_readable_here(operator_client, storage_root):
    status, body = post(operator_client, {"source": "path", "node": "nope", "path": "/x.gguf"})
    assert status == 404
    status, body = post(operator_client, {"source": "path", "path": "/x.gguf"})
    assert status == 422 and "node" in fields(body)
    NodeFactory(name="far", disk_free={"/srv/far": 100 * GIB})  # another machine's disk
    body = {"source": "path", "node": "far", "path": "/srv/far/model.gguf"}
    status, body = post(operator_client, body)
    assert status == 422 and "readable from the web process" in fields(body)["path"]
    assert not CatalogModel.objects.exists()


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/m.gguf", "http://0x7f.1:8000/m.gguf", "http://[::1]/m.gguf"],
)
def test_a_url_model_at_an_address_not_fetched_from_is_a_422_naming_url(
    operator_client, settings, url
):
    settings.GPUFLEET_FETCH_ALLOW = []
    status, answer = post(operator_client, {"source": "url", "url": url})
    assert status == 422, answer
    assert fields(answer) == {"url": REFUSED_MESSAGE}
    assert not CatalogModel.objects.exists()


def test_a_url_model_redirecting_to_loopback_is_refused(operator_client, gguf_hub, settings):
    settings.GPUFLEET_FETCH_ALLOW = []  # only the hub's own origin is trusted
    target = gguf_hub.resolve_url(REPO, "tiny-Q8_0.gguf")  # redirects to the CDN
    status, answer = post(operator_client, {"source": "url", "url": target})
    assert status == 422, answer
    assert REFUSED_MESSAGE in fields(answer)["url"]
    assert not CatalogModel.objects.exists()


def test_a_url_with_credentials_is_refused_and_nothing_reaches_the_server(
    operator_client, gguf_hub
):
    url = gguf_hub.resolve_url(REPO, "tiny-Q8_0.gguf").replace("http://", "http://user:s3cret@")
    status, body = post(operator_client, {"source": "url", "url": url})
    assert status == 422
    assert body["errors"][0]["field"] == "url" and "user name or password" in body["detail"]
    assert "s3cret" not in json.dumps(body)
    assert not CatalogModel.objects.exists()


def test_credentials_stored_before_are_never_shown(viewer_client):
    CatalogModelFactory(
        display_name="old", source_kind="url", url="https://bob:s3cret@mirror.example/m.gguf",
        hf_repo="", hf_filename="",
    )  # fmt: skip
    listing = viewer_client.get(URL).content.decode()
    page = viewer_client.get("/models/").content.decode()
    assert "s3cret" not in listing and "bob" not in listing and "s3cret" not in page
    assert "https://***@mirror.example/m.gguf" in listing
