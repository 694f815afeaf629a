"""The fleet overview: summary, alerts, and every node (filtered by the query string,
collapsed or expanded as the browser's ``gf_nodes`` cookie says). An htmx request (the
filter form) gets the live part only, which reconnects its websocket with the filter."""

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from core.requests import HtmxRequest
from inventory.fleet_view import COOKIE, OpenNodes, OverviewFilter
from inventory.live import overview_context


@require_GET
def overview(request: HtmxRequest) -> HttpResponse:
    view = OverviewFilter.parse(request.GET)
    context = overview_context(view, OpenNodes.parse(request.COOKIES.get(COOKIE)))
    template = "inventory/_live_root.html" if request.htmx else "inventory/overview.html"
    return render(request, template, context)
