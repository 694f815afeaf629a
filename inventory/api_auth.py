"""Who is calling the REST API and /metrics: an API token (``Authorization: Bearer …``)
or, for the interactive docs in the browser, the logged-in Django session."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from inventory.models import ApiToken
from inventory.throttle import note_bad_token

BEARER = "bearer"


def bearer_value(request: HttpRequest) -> str:
    """The raw token of an ``Authorization: Bearer <token>`` header, or ''."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != BEARER:
        return ""
    return value.strip()


def token_user(request: HttpRequest) -> Any | None:
    """The active user whose API token the request carries, or None (a wrong token
    counts towards the address's throttle, see ``inventory.throttle``)."""
    raw = bearer_value(request)
    token = ApiToken.authenticate(raw) if raw else None
    if raw and token is None:
        note_bad_token(request)
    return token.user if token is not None else None


class ApiTokenAuth(HttpBearer):
    """``Authorization: Bearer gpf_…``; tokens are created on the dashboard's token page."""

    def authenticate(self, request: HttpRequest, token: str) -> Any | None:
        api_token = ApiToken.authenticate(token.strip())
        if api_token is None:
            note_bad_token(request)
            return None
        return api_token.user


class BrowserSession(SessionAuth):
    """The logged-in dashboard session (what the interactive docs use).

    CSRF is checked only when the session is what authenticates, so a client that
    sends a wrong bearer token gets 401, not a confusing CSRF failure."""

    def __call__(self, request: HttpRequest) -> Any | None:
        if not request.user.is_authenticated:
            return None
        return super().__call__(request)


api_token_auth = ApiTokenAuth()
browser_session = BrowserSession()
API_AUTH = [api_token_auth, browser_session]
