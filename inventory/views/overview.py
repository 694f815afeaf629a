from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from inventory.live import fleet_context


@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "inventory/overview.html", fleet_context())
