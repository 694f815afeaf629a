"""gateway.actions: issuing and revoking inference keys, with their rules and events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from gateway.actions import do_issue_key, do_revoke_key
from gateway.models import InferenceKey, key_digest
from scheduling.models import Deployment
from tests.factories import CatalogModelFactory


@pytest.fixture
def deployments(db) -> list[Deployment]:
    model = CatalogModelFactory()
    return [Deployment.objects.create(model=model, served_name=n) for n in ("llama-8b", "qwen")]


def key_events(sent_events: list[dict]) -> list[dict]:
    return [e for e in sent_events if e["kind"] == "key.changed"]


def test_issuing_a_key_stores_only_its_digest_and_emits_key_changed(
    deployments, operator_user, sent_events, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        key, raw = do_issue_key(" chat ", operator_user, ["qwen", "llama-8b", "qwen"], None)
    assert raw.startswith("gfk_") and raw.startswith(key.prefix)
    stored = InferenceKey.objects.get(pk=key.pk)
    assert stored.digest == key_digest(raw) and raw not in {stored.name, stored.prefix}
    assert stored.name == "chat" and stored.served_names == ["llama-8b", "qwen"]
    assert stored.created_by == operator_user and stored.status == "active"
    assert [e["key_id"] for e in key_events(sent_events)] == [str(key.pk)]


def test_an_unknown_served_name_is_refused_naming_it(deployments, sent_events):
    with pytest.raises(ValidationError) as caught:
        do_issue_key("chat", None, ["qwen", "gpt-9", "nope"], None)
    message = " ".join(caught.value.message_dict["served_names"])
    assert "'gpt-9'" in message and "'nope'" in message and "qwen" not in message
    assert not InferenceKey.objects.exists() and not key_events(sent_events)


def test_a_served_name_no_deployment_could_have_is_refused_without_a_query(deployments):
    """A NUL byte: PostgreSQL refuses it in any query (the API fuzz found a 500)."""
    with pytest.raises(ValidationError) as caught:
        do_issue_key("chat", None, ["qwen", "\x00", "a\x00b"], None)
    message = " ".join(caught.value.message_dict["served_names"])
    assert "'\\x00'" in message and "qwen" not in message
    assert not InferenceKey.objects.exists()


def test_a_name_is_required_and_at_most_100_characters(db):
    with pytest.raises(ValidationError) as caught:
        do_issue_key("   ", None, [], None)
    assert "name" in caught.value.message_dict
    with pytest.raises(ValidationError) as caught:
        do_issue_key("x" * 101, None, [], None)
    assert "100" in caught.value.message_dict["name"][0]


def test_an_expiry_in_the_past_is_refused(db):
    with pytest.raises(ValidationError) as caught:
        do_issue_key("old", None, [], timezone.now() - timedelta(minutes=1))
    assert caught.value.message_dict["expires_at"] == ["Must be in the future."]


def test_every_wrong_field_is_named_at_once(db):
    with pytest.raises(ValidationError) as caught:
        do_issue_key("", None, ["gone"], timezone.now() - timedelta(days=1))
    assert set(caught.value.message_dict) == {"name", "served_names", "expires_at"}


def test_revoking_sets_revoked_at_and_emits_key_changed_once(
    db, sent_events, django_capture_on_commit_callbacks
):
    key, _ = InferenceKey.issue("ci")
    with django_capture_on_commit_callbacks(execute=True):
        do_revoke_key(key)
    revoked_at = InferenceKey.objects.get(pk=key.pk).revoked_at
    assert revoked_at is not None and key.status == "revoked"
    with django_capture_on_commit_callbacks(execute=True):
        do_revoke_key(key)
    assert InferenceKey.objects.get(pk=key.pk).revoked_at == revoked_at
    assert [e["key_id"] for e in key_events(sent_events)] == [str(key.pk)]
