"""Gateway usage over the last hour, day or week: totals per served name and per key,
and per served name its requests and tokens per minute."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from gateway.charts import (
    DEFAULT_WINDOW,
    WINDOWS,
    usage_charts,
    usage_report,
    usage_rows,
    window_start,
)


@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    window = request.GET.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        return HttpResponseBadRequest(f"Unknown window (use {', '.join(WINDOWS)}).")
    now = timezone.now()
    rows = usage_rows(window_start(window, now))
    context = {
        "window": window,
        "windows": WINDOWS,
        "report": usage_report(rows),
        "charts": usage_charts(rows, window, now),
    }
    return render(request, "gateway/usage.html", context)
