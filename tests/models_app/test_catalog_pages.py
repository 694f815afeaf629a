"""The catalog pages: the list with fits and copies, adding a model from the hub in
three steps (repo → files → facts → save), and asking for a download."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.units import GIB
from devtools.tiny_gguf import write_tiny_model
from models_app.choices import DownloadState
from models_app.models import CatalogModel, ModelFile
from tests.factories import CatalogModelFactory, GpuFactory, ModelFileFactory, NodeFactory
from tests.transfer.fakehub import FakeHub

pytestmark = pytest.mark.django_db


@pytest.fixture
def hub(monkeypatch, tmp_path):
    (path,) = write_tiny_model(tmp_path / "tiny-Q8_0.gguf", n_layer=4)
    (tmp_path / "split").mkdir()
    shards = write_tiny_model(tmp_path / "split" / "big.gguf", n_layer=4, split_max_tensors=14)
    with FakeHub() as fake:
        files = {"tiny-Q8_0.gguf": path, "README.md": b"# tiny\n"}
        files |= {f"split/{shard.name}": shard for shard in shards}
        fake.add_repo("acme/tiny-GGUF", files)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def test_viewers_see_the_catalog_without_add_or_download_controls(viewer_client):
    model = CatalogModelFactory(display_name="Qwen tiny")
    ModelFileFactory(model=model, node=NodeFactory(name="gpu-a"), state=DownloadState.READY)
    page = viewer_client.get(reverse("models_app:catalog")).content.decode()
    assert "Qwen tiny" in page and "gpu-a: ready" in page
    assert "Add a model" not in page and "Download to" not in page


def test_operators_get_a_download_form_per_model(operator_client):
    model = CatalogModelFactory()
    NodeFactory(name="gpu-b")
    page = operator_client.get(reverse("models_app:catalog")).content.decode()
    assert f'action="{reverse("models_app:download", args=[model.pk])}"' in page
    assert "gpu-b" in page


def test_the_catalog_says_which_gpus_could_hold_a_model(viewer_client, hub):
    from models_app.catalog import add_hf_model

    model = add_hf_model("acme/tiny-GGUF", "tiny-Q8_0.gguf")
    node = NodeFactory(name="gpu-a")
    GpuFactory(node=node, index=0, memory_total=24 * GIB, memory_used=0)
    GpuFactory(node=node, index=1, memory_total=24 * GIB, enabled=False)
    page = viewer_client.get(reverse("models_app:catalog")).content.decode()
    assert f'id="model-{model.pk}"' in page
    assert '<span class="fit yes">gpu-a: gpu0</span>' in page


def test_viewers_may_not_open_the_add_page(viewer_client):
    assert viewer_client.get(reverse("models_app:add")).status_code == 403


def test_typing_a_repo_lists_its_gguf_models_with_shards_as_one(operator_client, hub):
    url = reverse("models_app:hub-files")
    page = operator_client.get(url, {"hf_repo": "acme/tiny-GGUF"}).content.decode()
    assert 'value="tiny-Q8_0.gguf"' in page
    assert 'value="split/big-00001-of-00003.gguf"' in page and "3 shards" in page
    assert "README" not in page


def test_a_repo_that_does_not_exist_says_so(operator_client, hub):
    page = operator_client.get(reverse("models_app:hub-files"), {"hf_repo": "acme/nope"})
    assert "repository not found" in page.content.decode()


def test_picking_a_file_shows_its_facts_before_saving(operator_client, hub):
    query = {"hf_repo": "acme/tiny-GGUF", "hf_file": "tiny-Q8_0.gguf", "revision": "main"}
    page = operator_client.get(reverse("models_app:facts"), query).content.decode()
    assert "<dt>Architecture</dt><dd>llama" in page
    assert not CatalogModel.objects.exists()


def test_saving_adds_the_model_and_goes_to_the_catalog(operator_client, hub):
    data = {"source": "hf", "hf_repo": "acme/tiny-GGUF", "hf_file": "tiny-Q8_0.gguf"}
    response = operator_client.post(reverse("models_app:add"), data | {"revision": "main"})
    model = CatalogModel.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("models_app:catalog") + f"#model-{model.pk}"
    assert model.architecture == "llama" and len(model.commit) == 40


def test_saving_a_file_the_repo_lacks_keeps_the_form_with_the_reason(operator_client, hub):
    data = {"source": "hf", "hf_repo": "acme/tiny-GGUF", "hf_file": "nope.gguf", "revision": ""}
    response = operator_client.post(reverse("models_app:add"), data, HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200 and "nope.gguf" in page and "acme/tiny-GGUF" in page
    assert not CatalogModel.objects.exists()


def test_a_hub_source_needs_a_repo_and_a_file(operator_client):
    response = operator_client.post(reverse("models_app:add"), {"source": "hf"})
    assert response.status_code == 422
    assert response.content.decode().count("This field is required.") == 2


def test_requesting_a_download_queues_it_and_goes_to_the_downloads_page(
    operator_client, monkeypatch
):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **k: "t")
    model = CatalogModelFactory(hf_repo="acme/x-GGUF")
    node = NodeFactory(disk_free={"/srv/models": 500 * GIB})
    prefix = str(model.pk)
    response = operator_client.post(
        reverse("models_app:download", args=[model.pk]),
        {f"{prefix}-node": node.pk, f"{prefix}-download_path": ""},
        HTTP_HX_REQUEST="true",
    )
    assert response["HX-Redirect"] == reverse("models_app:downloads")
    copy = ModelFile.objects.get()
    assert (copy.node, copy.path) == (node, "/srv/models/acme__x-GGUF/tiny-Q8_0.gguf")


def test_a_download_path_outside_the_storage_roots_is_refused_on_the_form(operator_client):
    model = CatalogModelFactory()
    node = NodeFactory(disk_free={"/srv/models": 500 * GIB})
    prefix = str(model.pk)
    response = operator_client.post(
        reverse("models_app:download", args=[model.pk]),
        {f"{prefix}-node": node.pk, f"{prefix}-download_path": "/etc/cron.d"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "must lie inside a storage root" in response.content.decode()
    assert not ModelFile.objects.exists()
