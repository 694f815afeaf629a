"""Maintenance windows per node: operators plan and delete them, viewers only see them
(the banner on every page announces them). Each change is applied to the node's state
at once and tells open pages through ``maintenance.changed`` after commit."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from core.access import require_operator
from inventory.actions import do_delete_maintenance_window, do_save_maintenance_window
from inventory.forms import MaintenanceWindowForm
from inventory.models import MaintenanceWindow, Node
from inventory.redirects import safe_next


def _next_hour() -> datetime:
    now = timezone.localtime()
    return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def _back(request: HttpRequest, node: Node) -> HttpResponseRedirect:
    target = safe_next(request)
    if target:
        return HttpResponseRedirect(target)
    return redirect("inventory:maintenance-new", node_id=node.pk)


def _page(
    request: HttpRequest, node: Node, form: MaintenanceWindowForm, status: int
) -> HttpResponse:
    context: dict[str, Any] = {
        "node": node,
        "form": form,
        "windows": node.maintenance_windows.filter(ends_at__gt=timezone.now()).select_related(
            "created_by"
        ),
        "next": request.POST.get("next") or request.GET.get("next", ""),
        "time_zone": timezone.get_current_timezone_name(),
    }
    return render(request, "inventory/maintenance_form.html", context, status=status)


@require_http_methods(["GET", "POST"])
def maintenance_new(request: HttpRequest, node_id: str) -> HttpResponse:
    require_operator(request.user, "plan maintenance", "inventory.add_maintenancewindow")
    node = get_object_or_404(Node, pk=node_id)
    author = request.user if request.user.is_authenticated else None
    window = MaintenanceWindow(node=node, created_by=author)
    start = _next_hour()
    initial = {"starts_at": start, "ends_at": start + timedelta(hours=2)}
    form = MaintenanceWindowForm(request.POST or None, instance=window, initial=initial)
    if request.method == "POST" and form.is_valid():
        do_save_maintenance_window(form.save(commit=False))
        return _back(request, node)
    return _page(request, node, form, status=422 if form.errors else 200)


@require_POST
def maintenance_delete(request: HttpRequest, window_id: str) -> HttpResponse:
    require_operator(request.user, "plan maintenance", "inventory.delete_maintenancewindow")
    window = get_object_or_404(MaintenanceWindow.objects.select_related("node"), pk=window_id)
    node = window.node
    do_delete_maintenance_window(window)
    return _back(request, node)
