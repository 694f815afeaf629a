"""The downloads page and its buttons, and the storage page of a node."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from core.units import GIB
from models_app.choices import DownloadState
from models_app.models import ModelFile
from tests.factories import CatalogModelFactory, ModelFileFactory, NodeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(
        "django_q.tasks.async_task", lambda func, *args, **kw: calls.append((func, args)) or "t"
    )
    return calls


def test_the_downloads_page_lists_copies_with_progress_and_connects_live(viewer_client):
    copy = ModelFileFactory(state=DownloadState.DOWNLOADING, bytes_total=4 * GIB, bytes_done=GIB)
    page = viewer_client.get(reverse("models_app:downloads")).content.decode()
    assert f'id="copy-{copy.pk}"' in page and "25.0 %" in page
    assert 'ws-connect="/ws/downloads/"' in page
    assert "<button" not in page.split('id="download-table"')[1]


def test_cancel_answers_the_updated_row(operator_client):
    copy = ModelFileFactory(state=DownloadState.DOWNLOADING)
    url = reverse("models_app:download-action", args=[copy.pk, "cancel"])
    response = operator_client.post(url, HTTP_HX_REQUEST="true")
    assert f'id="copy-{copy.pk}" class="copy cancelled"' in response.content.decode()
    assert ">Retry</button>" in response.content.decode()


def test_retry_of_a_ready_copy_is_refused_with_the_reason_in_the_row(operator_client, queued):
    copy = ModelFileFactory(state=DownloadState.READY)
    url = reverse("models_app:download-action", args=[copy.pk, "retry"])
    page = operator_client.post(url, HTTP_HX_REQUEST="true").content.decode()
    assert "is already on" in page
    assert queued == []


def test_delete_queues_the_removal_on_the_copys_node(operator_client, queued):
    copy = ModelFileFactory(state=DownloadState.READY)
    url = reverse("models_app:download-action", args=[copy.pk, "delete"])
    with_callbacks = operator_client.post(url, {"next": "/models/downloads/"})
    assert with_callbacks.status_code == 302
    copy.refresh_from_db()
    assert copy.state == DownloadState.DELETING


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example/x",
        "http://testserver.evil.example/",
        "javascript:alert(1)",
    ],
)
def test_retry_never_goes_back_to_another_site(operator_client, queued, target):
    copy = ModelFileFactory(state=DownloadState.FAILED)
    url = reverse("models_app:download-action", args=[copy.pk, "retry"])
    response = operator_client.post(url, {"next": target})
    assert response.status_code == 302
    assert response["Location"] == reverse("models_app:downloads")


def test_retry_goes_back_to_a_page_of_this_site(operator_client, queued):
    copy = ModelFileFactory(state=DownloadState.FAILED)
    url = reverse("models_app:download-action", args=[copy.pk, "retry"])
    back = f"/models/storage/{copy.node.pk}/?x=1"
    response = operator_client.post(url, {"next": back})
    assert response.status_code == 302 and response["Location"] == back


def test_viewers_may_not_press_the_buttons(viewer_client):
    copy = ModelFileFactory(state=DownloadState.DOWNLOADING)
    url = reverse("models_app:download-action", args=[copy.pk, "cancel"])
    assert viewer_client.post(url).status_code == 403
    copy.refresh_from_db()
    assert copy.state == DownloadState.DOWNLOADING


def test_an_unknown_action_is_not_found(operator_client):
    copy = ModelFileFactory()
    url = reverse("models_app:download-action", args=[copy.pk, "explode"])
    assert operator_client.post(url).status_code == 404


def test_the_storage_page_shows_free_space_and_each_copys_size_and_last_use(operator_client):
    node = NodeFactory(name="gpu-a", disk_free={"/srv/models": 300 * GIB})
    used = timezone.now() - timezone.timedelta(hours=3)
    ModelFileFactory(
        node=node,
        model=CatalogModelFactory(display_name="Big one", size_bytes=8 * GIB),
        state=DownloadState.READY,
        last_used_at=used,
    )
    ModelFileFactory(node=node, state=DownloadState.DOWNLOADING, bytes_done=GIB)
    page = operator_client.get(reverse("models_app:storage", args=[node.pk])).content.decode()
    assert "300.0\xa0GB</strong> free" in page
    assert "9.0\xa0GB</strong> used by 2 model copies" in page
    assert "Big one" in page and "3\xa0hours ago" in page
    assert page.count(">Delete</button>") == 2


def test_the_storage_index_opens_the_first_node(viewer_client):
    node = NodeFactory(name="a-node")
    NodeFactory(name="b-node")
    response = viewer_client.get(reverse("models_app:storage-index"))
    assert response["Location"] == reverse("models_app:storage", args=[node.pk])


def test_copies_stay_listed_until_their_files_are_gone(operator_client, queued):
    copy = ModelFileFactory(state=DownloadState.FAILED)
    operator_client.post(reverse("models_app:download-action", args=[copy.pk, "delete"]))
    assert ModelFile.objects.filter(pk=copy.pk, state=DownloadState.DELETING).exists()


def test_the_admin_cancels_selected_downloads_for_operators(admin_client):
    running = ModelFileFactory(state=DownloadState.DOWNLOADING)
    ready = ModelFileFactory(state=DownloadState.READY)
    url = reverse("admin:models_app_modelfile_changelist")
    data = {"action": "cancel", "_selected_action": [running.pk, ready.pk]}
    page = admin_client.post(url, data, follow=True).content.decode()
    running.refresh_from_db()
    ready.refresh_from_db()
    assert (running.state, ready.state) == (DownloadState.CANCELLED, DownloadState.READY)
    assert "1 of 2 copies changed." in page
