"""/tokens/: the user's API tokens (list, create once-shown, revoke own)."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from inventory.models import ApiToken
from inventory.models.tokens import digest
from tests.factories import UserFactory

URL = reverse("inventory:tokens")


def revoke_url(token: ApiToken) -> str:
    return reverse("inventory:token-revoke", args=[token.pk])


def test_tokens_page_needs_login(anon_client, db):
    response = anon_client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_tokens_page_lists_only_my_tokens(viewer_client, viewer_user):
    mine, _ = ApiToken.issue(viewer_user, "my-laptop")
    ApiToken.issue(UserFactory(), "someone-elses")
    response = viewer_client.get(URL)
    assert response.status_code == 200
    content = response.content.decode()
    assert "my-laptop" in content and mine.prefix in content
    assert "someone-elses" not in content


def test_created_token_is_shown_once_and_only_its_hash_is_stored(viewer_client, viewer_user):
    response = viewer_client.post(URL, {"name": "prometheus"})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=viewer_user)
    raw = response.context["raw_token"]
    assert raw.startswith("gpf_") and raw.startswith(token.prefix)
    assert response.content.decode().count(raw) == 1
    assert "no-store" in response["Cache-Control"]
    assert token.digest == digest(raw)
    assert raw not in {token.name, token.prefix, token.digest}
    assert raw not in viewer_client.get(URL).content.decode()


def test_created_token_works_for_the_api(viewer_client, node):
    raw = viewer_client.post(URL, {"name": "ci"}).context["raw_token"]
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    assert client.get("/api/v1/nodes").status_code == 200


def test_a_token_needs_a_name(viewer_client, viewer_user):
    response = viewer_client.post(URL, {"name": "  "})
    assert response.status_code == 200
    assert response.context["form"].errors["name"]
    assert not ApiToken.objects.filter(user=viewer_user).exists()


def test_revoking_my_token_deletes_it(viewer_client, viewer_user):
    token, raw = ApiToken.issue(viewer_user, "old")
    response = viewer_client.post(revoke_url(token))
    assert response.status_code == 302
    assert response["Location"] == URL
    assert not ApiToken.objects.filter(pk=token.pk).exists()
    assert ApiToken.authenticate(raw) is None


def test_revoking_someone_elses_token_is_a_404_and_keeps_it(viewer_client):
    token, _ = ApiToken.issue(UserFactory(), "theirs")
    assert viewer_client.post(revoke_url(token)).status_code == 404
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_revoke_only_accepts_post(viewer_client, viewer_user):
    token, _ = ApiToken.issue(viewer_user, "kept")
    assert viewer_client.get(revoke_url(token)).status_code == 405
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_revoke_needs_a_csrf_token(viewer_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer_user)
    token, _ = ApiToken.issue(viewer_user, "kept")
    assert client.post(revoke_url(token)).status_code == 403
    assert ApiToken.objects.filter(pk=token.pk).exists()
