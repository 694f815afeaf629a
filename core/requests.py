"""Typed requests: what django-htmx and django-ninja add to Django's ``HttpRequest``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxRequest(HttpRequest):
    """A page request: ``htmx`` is set by django-htmx's middleware."""

    htmx: HtmxDetails


class ApiRequest(HttpRequest):
    """An API request: ``auth`` is the user the token or session authenticated."""

    auth: Any
