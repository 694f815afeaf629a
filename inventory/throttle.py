"""Bad API tokens per client address: after ``GPUFLEET_TOKEN_FAILURES`` within
``GPUFLEET_TOKEN_FAILURE_WINDOW`` seconds, every bearer request from that address gets
429 with ``Retry-After`` until the window ends.

django-axes covers logins with a password, not bearer tokens. Both take the client's
address from ``inventory.proxies`` (``X-Forwarded-For`` only from trusted proxies). The
counter lives in Django's cache, which is Redis or the database (see settings), so every
web process of a cluster shares it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin

from inventory.proxies import client_ip

log = logging.getLogger(__name__)

THROTTLED_PATHS = ("/api/", "/metrics")


def client_address(request: HttpRequest) -> str:
    """The client's address (behind trusted proxies too, see ``inventory.proxies``)."""
    return client_ip(request) or "unknown"


def _key(address: str) -> str:
    return "gpufleet:bad-tokens:" + hashlib.sha256(address.encode()).hexdigest()[:32]


def note_bad_token(request: HttpRequest) -> None:
    """Count one wrong bearer token from the request's address (and log it).

    Read, then write with the window's remaining time: not atomic, so two processes
    failing at the same instant may count once; a throttle can live with that."""
    window = settings.GPUFLEET_TOKEN_FAILURE_WINDOW
    key, now = _key(client_address(request)), time.time()
    since, count = cache.get(key) or (now, 0)
    if now - since >= window:
        since, count = now, 0
    count += 1
    cache.set(key, (since, count), timeout=max(1, math.ceil(since + window - now)))
    log.warning(
        "bad API token from %s on %s (%d in the window)",
        client_address(request),
        request.path,
        count,
    )


def retry_after(request: HttpRequest) -> int | None:
    """Seconds until the address may try tokens again, or None if it may now."""
    since, count = cache.get(_key(client_address(request))) or (0.0, 0)
    left = since + settings.GPUFLEET_TOKEN_FAILURE_WINDOW - time.time()
    if count < settings.GPUFLEET_TOKEN_FAILURES or left <= 0:
        return None
    return max(1, math.ceil(left))


def too_many(request: HttpRequest, wait: int) -> HttpResponse:
    detail = f"Too many bad API tokens from this address: retry in {wait} s."
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": detail}, status=429)
    else:
        response = HttpResponse(detail + "\n", status=429, content_type="text/plain")
    response["Retry-After"] = str(wait)
    return response


class BadTokenThrottleMiddleware(MiddlewareMixin):
    """Refuses bearer requests to the REST API and /metrics from a throttled address,
    before the token is even looked at (so a right guess is refused too)."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if not request.path.startswith(THROTTLED_PATHS):
            return None
        if "HTTP_AUTHORIZATION" not in request.META:
            return None
        wait = retry_after(request)
        return too_many(request, wait) if wait is not None else None
