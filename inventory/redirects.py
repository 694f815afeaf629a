"""Going back where a form came from (its ``next`` field), never to another site."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme


def safe_next(request: HttpRequest) -> str:
    """The posted ``next`` when it stays on this host; "" for anything else
    (``https://evil.example/``, ``//evil.example/x``, ``javascript:`` …)."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return ""
