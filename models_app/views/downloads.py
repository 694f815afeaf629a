"""The downloads page (live progress over the websocket), its cancel / retry / delete
buttons, and the storage page of each node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from core.access import can_operate, require_operator
from inventory.models import Node
from inventory.redirects import safe_next
from models_app import actions
from models_app.models import ModelFile
from models_app.storage import node_storage

ACTIONS: dict[str, Callable[[ModelFile], Any]] = {
    "cancel": actions.do_cancel,
    "retry": actions.do_retry,
    "delete": actions.do_request_delete,
}


def downloads_context() -> dict[str, Any]:
    copies = ModelFile.objects.select_related("model", "node").order_by("-created_at")
    return {"copies": list(copies[:500])}


@require_GET
def downloads_page(request: HttpRequest) -> HttpResponse:
    context = downloads_context() | {"can_operate": can_operate(request.user)}
    return render(request, "models_app/downloads.html", context)


@require_POST
def download_action(request: HttpRequest, copy_id: UUID, action: str) -> HttpResponse:
    """Cancel, retry or delete from disk; answers the copy's row (htmx) or goes back."""
    require_operator(request.user, "change downloads")
    if action not in ACTIONS:
        raise Http404(f"No such action: {action}")
    copy = get_object_or_404(ModelFile.objects.select_related("model", "node"), pk=copy_id)
    message = ""
    try:
        ACTIONS[action](copy)
    except actions.DownloadRefused as error:
        message = error.message
    copy = ModelFile.objects.select_related("model", "node").filter(pk=copy_id).first() or copy
    if not request.htmx:  # type: ignore[attr-defined]
        return redirect(safe_next(request) or "models_app:downloads")
    context = {"copy": copy, "can_operate": True, "message": message}
    return render(request, "models_app/_download_row.html", context)


@require_GET
def storage_page(request: HttpRequest, node_id: object) -> HttpResponse:
    node = get_object_or_404(Node, pk=node_id)
    context = {
        "node": node,
        "roots": node_storage(node),
        "nodes": Node.objects.order_by("name"),
        "can_operate": can_operate(request.user),
    }
    return render(request, "models_app/storage.html", context)


@require_GET
def storage_index(request: HttpRequest) -> HttpResponse:
    node = Node.objects.order_by("name").first()
    if node is None:
        raise Http404("No nodes yet.")
    return redirect("models_app:storage", node_id=node.pk)
