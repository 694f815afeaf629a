"""The admin lists inference keys and usage read-only, and revokes keys by action."""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from gateway.models import InferenceKey, UsageMinute


def test_the_admin_lists_keys_without_their_digest(admin_client):
    key, raw = InferenceKey.issue("ci", served_names=["qwen"])
    html = admin_client.get(reverse("admin:gateway_inferencekey_changelist")).content.decode()
    assert "ci" in html and key.prefix in html and "active" in html
    detail = admin_client.get(reverse("admin:gateway_inferencekey_change", args=[key.pk]))
    assert detail.status_code == 200
    assert key.digest not in detail.content.decode() and raw not in detail.content.decode()
    assert admin_client.get(reverse("admin:gateway_inferencekey_add")).status_code == 403


def test_the_revoke_action_goes_through_the_action(
    admin_client, sent_events, django_capture_on_commit_callbacks
):
    key, _ = InferenceKey.issue("old")
    kept, _ = InferenceKey.issue("kept")
    url = reverse("admin:gateway_inferencekey_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"action": "revoke", "_selected_action": [key.pk]})
    assert response.status_code == 302
    key.refresh_from_db()
    kept.refresh_from_db()
    assert key.revoked_at is not None and kept.revoked_at is None
    assert [e["key_id"] for e in sent_events if e["kind"] == "key.changed"] == [str(key.pk)]


def test_usage_rows_are_read_only(admin_client, db):
    row = UsageMinute.objects.create(
        minute=timezone.now().replace(second=0, microsecond=0), served_name="qwen", requests=3
    )
    url = reverse("admin:gateway_usageminute_changelist")
    assert admin_client.get(url).status_code == 200
    assert admin_client.get(reverse("admin:gateway_usageminute_add")).status_code == 403
    detail = admin_client.post(reverse("admin:gateway_usageminute_change", args=[row.pk]), {})
    assert detail.status_code == 403
