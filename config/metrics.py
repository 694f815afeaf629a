"""Prometheus /metrics: every app's series in one scrape. The fleet's GPUs in the DCGM
exporter's names (``inventory.metrics``), each running backend's own readings
(``scheduling.metrics``: slots, busy, deferred, tokens/s, KV use) and the gateway's
request, token, TTFT, queue-wait and cold-start series of this process
(``gateway.usage``; a gateway run on its own counts its own).

Needs an API token (``Authorization: Bearer …``); the login page does not apply.
Each scrape builds a fresh registry from the database: no global metric state.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.usage import REGISTRY as GATEWAY_REGISTRY
from inventory.api_auth import token_user
from inventory.metrics import FleetCollector, unauthorized
from scheduling.metrics import InstanceCollector


@login_not_required
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if token_user(request) is None:
        return unauthorized()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector())
    registry.register(InstanceCollector())
    body = generate_latest(registry) + generate_latest(GATEWAY_REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
