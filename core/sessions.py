"""Websockets end with the login session they were opened under.

Every live consumer joins a group for its session and one for its user. Logging out
closes the session's sockets at once; a password change or a deactivation asks the
user's sockets to check their session again (the session that changed the password
keeps its login, every other one loses it). Those messages only reach sockets in
processes that share the channel layer (all of them with Redis, the one web process
of the embedded default), so each consumer also re-checks its session every
``RECHECK_EVERY`` seconds: that covers expiry and changes made by other processes.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import import_module
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare

log = logging.getLogger(__name__)

CLOSE = "session.close"
CHECK = "session.check"


def session_group(session_key: str) -> str:
    """The group of one session's sockets (the key itself stays out of Redis)."""
    return "session-" + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def user_group(user_id: Any) -> str:
    return f"user-{user_id}"


def session_is_live(session_key: str | None, user_id: Any) -> bool:
    """The user is active and, where the socket came with a session, that session still
    exists, has not expired, belongs to the user and carries their current auth hash
    (what ``django.contrib.auth.get_user`` checks on every request)."""
    user: Any = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return False
    if session_key is None:  # a scope without a session: only tests build those
        return True
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    data = store.load()  # {} once the session is gone or expired
    if str(data.get(SESSION_KEY)) != str(user.pk):
        return False
    stored = str(data.get(HASH_SESSION_KEY, ""))
    secrets = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return any(
        constant_time_compare(stored, user._get_session_auth_hash(secret=secret))
        for secret in secrets
    )


def _send(group: str, message_type: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": message_type})
    except RuntimeError:
        # Called on an event loop's own thread: the periodic re-check closes them instead.
        log.warning("could not message the sockets of %s; the re-check will close them", group)


def on_logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        _send(session_group(session_key), CLOSE)


def on_user_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A password change or deactivation: the user's sockets check their sessions."""
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    group = user_group(instance.pk)
    transaction.on_commit(lambda: _send(group, CHECK))
