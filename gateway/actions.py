"""Issuing and revoking inference keys. Each runs in one transaction and emits
``key.changed`` after commit, so that every gateway process drops or learns the key."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core import events
from gateway.models import InferenceKey
from scheduling.models import Deployment, served_name_validator

NAME_MAX = InferenceKey._meta.get_field("name").max_length or 100


def _name_errors(name: str) -> list[str]:
    if not name:
        return ["A name is required."]
    if len(name) > NAME_MAX:
        return [f"At most {NAME_MAX} characters (it has {len(name)})."]
    return []


def _served_name_errors(served_names: list[str]) -> list[str]:
    """Names no deployment serves; a name no deployment could have (a NUL byte, which
    PostgreSQL refuses in any query) is never looked up."""
    possible = [n for n in served_names if re.fullmatch(served_name_validator.regex, n)]
    known = set(
        Deployment.objects.filter(served_name__in=possible).values_list("served_name", flat=True)
    )
    unknown = [name for name in served_names if name not in known]
    if unknown:
        return [f"No deployment serves {', '.join(repr(n) for n in unknown)}."]
    return []


def _expiry_errors(expires_at: datetime | None, now: datetime) -> list[str]:
    if expires_at is not None and expires_at <= now:
        return ["Must be in the future."]
    return []


def check_key(name: str, served_names: list[str], expires_at: datetime | None) -> None:
    """Raise one ``ValidationError`` naming every field that is wrong."""
    found = {
        "name": _name_errors(name),
        "served_names": _served_name_errors(served_names),
        "expires_at": _expiry_errors(expires_at, timezone.now()),
    }
    errors = {field: messages for field, messages in found.items() if messages}
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def do_issue_key(
    name: str,
    user: Any,
    served_names: Iterable[str] = (),
    expires_at: datetime | None = None,
) -> tuple[InferenceKey, str]:
    """A new key limited to ``served_names`` (empty: every model) and its plain text,
    which is never stored: show it once."""
    name = (name or "").strip()
    wanted = sorted({str(n).strip() for n in served_names if str(n).strip()})
    check_key(name, wanted, expires_at)
    key, raw = InferenceKey.issue(name, user=user, served_names=wanted, expires_at=expires_at)
    events.send("key.changed", key_id=str(key.pk))
    return key, raw


@transaction.atomic
def do_revoke_key(key: InferenceKey) -> InferenceKey:
    """Revoke ``key`` now; revoking it again changes nothing and sends nothing."""
    now = timezone.now()
    changed = InferenceKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
    key.refresh_from_db()
    if changed:
        events.send("key.changed", key_id=str(key.pk))
    return key
