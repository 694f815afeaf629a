"""Inference keys in memory: a request is checked against a dict, not the database.

The cache holds every key that is not revoked (digest → ``KeyInfo``) and is reloaded
after a ``key.changed`` event and every ``RESYNC`` seconds. An unknown key triggers at
most one reload per ``MISS_RELOAD`` seconds (a key created a moment ago in another
process), so a flood of bad keys costs no more than one query a second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.errors import GatewayError
from gateway.models import KEY_PREFIX, InferenceKey, key_digest

MISS_RELOAD = 1.0


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    name: str
    served_names: frozenset[str]  # empty: every model
    expires_at: float | None  # epoch seconds

    def allows(self, served_name: str) -> bool:
        return not self.served_names or served_name in self.served_names


def load_keys() -> dict[str, KeyInfo]:
    rows = InferenceKey.objects.filter(revoked_at__isnull=True).values_list(
        "id", "name", "digest", "served_names", "expires_at"
    )
    return {
        digest: KeyInfo(
            str(pk), name, frozenset(names or ()), expires.timestamp() if expires else None
        )
        for pk, name, digest, names, expires in rows
    }


class KeyCache:
    def __init__(self) -> None:
        self.keys: dict[str, KeyInfo] = {}
        self.loaded_at = 0.0

    def replace(self, keys: dict[str, KeyInfo]) -> None:
        self.keys = keys
        self.loaded_at = time.monotonic()

    def may_reload_for_miss(self) -> bool:
        return time.monotonic() - self.loaded_at >= MISS_RELOAD

    def lookup(self, raw: str) -> KeyInfo | None:
        if not raw.startswith(KEY_PREFIX) or len(raw) > 256:
            return None
        return self.keys.get(key_digest(raw))

    @staticmethod
    def check(info: KeyInfo | None) -> KeyInfo:
        """The key's facts, or the 401 a missing, unknown or expired key gets."""
        if info is None:
            raise GatewayError(
                401,
                "Invalid or missing inference key: send 'Authorization: Bearer gfk_…' "
                "(create keys on the dashboard's Inference keys page).",
                code="invalid_api_key",
            )
        if info.expires_at is not None and info.expires_at <= time.time():
            raise GatewayError(401, "This inference key has expired.", code="expired_api_key")
        return info


def bearer(headers: list[tuple[bytes, bytes]]) -> str:
    """The raw key of an ``Authorization: Bearer …`` header (ASGI headers), or ''."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""
