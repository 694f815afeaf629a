"""/keys/: every user lists inference keys; operators create (shown once) and revoke."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gateway.models import InferenceKey, key_digest
from scheduling.models import Deployment
from tests.factories import CatalogModelFactory

URL = reverse("gateway:keys")


def revoke_url(key: InferenceKey) -> str:
    return reverse("gateway:key-revoke", args=[key.pk])


@pytest.fixture
def deployments(db) -> list[Deployment]:
    model = CatalogModelFactory()
    return [Deployment.objects.create(model=model, served_name=n) for n in ("llama-8b", "qwen")]


def test_the_keys_page_needs_login(anon_client, db):
    response = anon_client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_nav_links_to_keys_and_usage(viewer_client):
    content = viewer_client.get(reverse("inventory:overview")).content.decode()
    assert f'href="{URL}"' in content and "Inference keys" in content
    assert f'href="{reverse("gateway:usage")}"' in content


def test_viewers_see_every_key_but_no_form_or_revoke_button(viewer_client, operator_user):
    key, raw = InferenceKey.issue("chat frontend", user=operator_user, served_names=["qwen"])
    InferenceKey.issue("eval", expires_at=timezone.now() + timedelta(days=3))
    response = viewer_client.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert "chat frontend" in content and f"{key.prefix}…" in content and "eval" in content
    assert "qwen" in content and ">all<" in content and "operator" in content
    assert raw not in content and key.digest not in content
    assert "Create key" not in content and revoke_url(key) not in content


def test_the_form_offers_the_current_served_names(operator_client, deployments):
    content = operator_client.get(URL).content.decode()
    assert '<option value="llama-8b">' in content and '<option value="qwen">' in content


def test_a_created_key_is_shown_once_and_only_its_digest_is_stored(
    operator_client, operator_user, deployments, sent_events, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(URL, {"name": "chat", "served_names": ["qwen"]})
    assert response.status_code == 200
    key = InferenceKey.objects.get()
    raw = response.context["raw_key"]
    assert raw.startswith("gfk_") and raw.startswith(key.prefix)
    assert response.content.decode().count(raw) == 1
    assert "no-store" in response["Cache-Control"]
    assert key.digest == key_digest(raw) and key.served_names == ["qwen"]
    assert key.created_by == operator_user
    assert raw not in operator_client.get(URL).content.decode()
    assert [e["key_id"] for e in sent_events if e["kind"] == "key.changed"] == [str(key.pk)]


def test_the_list_page_is_never_cached_either(viewer_client):
    assert "no-store" in viewer_client.get(URL)["Cache-Control"]


def test_an_expiry_can_be_set(operator_client, db):
    when = (timezone.localtime() + timedelta(days=2)).replace(second=0, microsecond=0)
    operator_client.post(URL, {"name": "temp", "expires_at": when.strftime("%Y-%m-%dT%H:%M")})
    assert InferenceKey.objects.get().expires_at == when


def test_bad_input_is_shown_on_its_field_and_creates_nothing(operator_client, deployments):
    past = (timezone.localtime() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    response = operator_client.post(URL, {"name": "", "served_names": ["nope"], "expires_at": past})
    form = response.context["form"]
    assert {"name", "served_names"} <= set(form.errors)
    assert not InferenceKey.objects.exists() and not response.context["raw_key"]
    response = operator_client.post(URL, {"name": "late", "expires_at": past})
    assert response.context["form"].errors["expires_at"] == ["Must be in the future."]
    assert not InferenceKey.objects.exists()


def test_a_viewer_may_not_create_a_key(viewer_client, deployments):
    response = viewer_client.post(URL, {"name": "mine"})
    assert response.status_code == 403
    assert not InferenceKey.objects.exists()


def test_an_operator_revokes_a_key_after_a_confirm(
    operator_client, sent_events, django_capture_on_commit_callbacks
):
    key, _ = InferenceKey.issue("old")
    page = operator_client.get(URL).content.decode()
    assert revoke_url(key) in page and 'data-confirm="Revoke the key old?' in page
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(revoke_url(key))
    assert response.status_code == 302 and response["Location"] == URL
    key.refresh_from_db()
    assert key.revoked_at is not None and key.status == "revoked"
    assert [e["key_id"] for e in sent_events if e["kind"] == "key.changed"] == [str(key.pk)]
    page = operator_client.get(URL).content.decode()
    assert "revoked" in page and revoke_url(key) not in page


def test_a_viewer_may_not_revoke_a_key(viewer_client, sent_events):
    key, _ = InferenceKey.issue("kept")
    assert viewer_client.post(revoke_url(key)).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None and not sent_events


def test_revoke_only_accepts_post_and_needs_a_csrf_token(operator_client, operator_user):
    key, _ = InferenceKey.issue("kept")
    assert operator_client.get(revoke_url(key)).status_code == 405
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)
    assert client.post(revoke_url(key)).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None


def test_revoking_an_unknown_key_is_a_404(operator_client, db):
    url = reverse("gateway:key-revoke", args=["00000000-0000-0000-0000-000000000000"])
    assert operator_client.post(url).status_code == 404
