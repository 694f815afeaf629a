"""Live fragments of the downloads page: a copy's row after each ``download.changed`` event.

Rows are rendered once per event and kind of viewer (operators see the buttons), however
many browsers are connected. A new copy sends the whole table (its row has nowhere to go
yet), a deleted one removes its row. Rows go bare (no ``<template>`` around them): htmx 2
parses a websocket message inside a template of its own, and its ws extension swaps each
top-level element of the message out of band.
"""

from __future__ import annotations

from collections import OrderedDict

from django.template.loader import render_to_string

from core.events import Event
from models_app.choices import DownloadState
from models_app.models import ModelFile

_CACHE_SIZE = 512
_cache: OrderedDict[tuple[str, bool], str] = OrderedDict()


def table_context(operator: bool) -> dict[str, object]:
    copies = ModelFile.objects.select_related("model", "node").order_by("-created_at")
    return {"copies": list(copies[:500]), "can_operate": operator}


def render_resync(operator: bool) -> str:
    context = table_context(operator) | {"oob": True}
    return render_to_string("models_app/_download_table.html", context)


def _render_uncached(event: Event, operator: bool) -> str:
    file_id = event.get("file_id", "")
    copy = ModelFile.objects.select_related("model", "node").filter(pk=file_id).first()
    if copy is None:
        return f'<tr id="copy-{file_id}" hx-swap-oob="delete"></tr>'
    if copy.state == DownloadState.QUEUED and copy.attempts == 0:
        return render_resync(operator)
    context = {"copy": copy, "can_operate": operator, "oob": True}
    return render_to_string("models_app/_download_row.html", context)


def render_event(event: Event, operator: bool) -> str:
    if not event["kind"].startswith("download."):
        return ""
    key = (event["id"], operator)
    html = _cache.get(key)
    if html is None:
        html = _render_uncached(event, operator)
        _cache[key] = html
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return html
