"""The live log tail of an instance: the last lines of its current run's log file,
polled by htmx while the instance starts or runs."""

from __future__ import annotations

from uuid import UUID

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from scheduling.models import Instance
from scheduling.views.fragments import LOG_STATES, log_context

STOP_POLLING = 286  # htmx stops an "every 2s" trigger on this status


@require_GET
def instance_log(request: HttpRequest, instance_id: UUID) -> HttpResponse:
    instance = Instance.objects.select_related("node").filter(pk=instance_id).first()
    if instance is None:
        raise Http404(f"No instance {instance_id}.")
    context = log_context(instance, instance.current_run)
    status = 200 if instance.state in LOG_STATES else STOP_POLLING
    return render(request, "scheduling/_log.html", context, status=status)
