"""The alerts page: active alerts first, then the history of cleared ones, paginated,
filtered by kind and node. Alerts are raised and cleared by ``inventory.alerts``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from inventory.forms import AlertFilterForm
from inventory.history import format_duration
from inventory.models import Alert

PER_PAGE = 50
MAX_ACTIVE = 200


def _row(alert: Alert, now: Any) -> dict[str, Any]:
    end = alert.cleared_at or now
    return {"alert": alert, "duration": format_duration((end - alert.raised_at).total_seconds())}


@require_GET
def alert_list(request: HttpRequest) -> HttpResponse:
    form = AlertFilterForm(request.GET)
    filters = form.filters()
    alerts = Alert.objects.filter(**filters).select_related("node", "gpu", "gpu__node")
    now = timezone.now()
    current = alerts.filter(cleared_at__isnull=True).order_by("severity", "-raised_at")
    active = [_row(a, now) for a in current[:MAX_ACTIVE]]
    cleared = alerts.filter(cleared_at__isnull=False).order_by("-cleared_at", "-pk")
    page = Paginator(cleared, PER_PAGE).get_page(request.GET.get("page"))
    query = {k: v for k, v in request.GET.items() if k in ("kind", "node") and v}
    context = {
        "form": form,
        "active": active,
        "page": page,
        "history": [_row(a, now) for a in page.object_list],
        "filter_query": urlencode(query),
        "filtered": bool(filters),
    }
    return render(request, "inventory/alerts.html", context)
