"""The GPU page: facts, current readings, processes, history charts, and the settings form.

The settings form posts with HTMX and swaps itself. Invalid input comes back with
status 200 and the errors next to the fields, because htmx 2 does not swap 4xx
responses by default; a plain (non-HTMX) post that fails re-renders the whole page with
status 422, and one that succeeds redirects back to the GPU page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods

from core.access import can_operate, require_operator
from core.requests import HtmxRequest
from inventory.actions import do_update_gpu_settings
from inventory.charts import ChartSpec, render_chart, summary
from inventory.forms import GIB, GpuSettingsForm
from inventory.history import MAX_POINTS, RANGES, History, downsample, gap_seconds, load_history
from inventory.models import Gpu
from inventory.presenters import GpuRow, gpu_row, gpu_state

READINGS_TARGET = "gpu-readings"


@dataclass(frozen=True)
class Metric:
    title: str
    field: str
    unit: str


METRICS = {
    "util": Metric("Utilisation", "utilization", "%"),
    "memory": Metric("Memory used", "memory_used", "GiB"),
}


def _get_gpu(gpu_id: object) -> Gpu:
    return get_object_or_404(Gpu.objects.select_related("node"), pk=gpu_id)


def _chart(gpu: Gpu, history: History, metric_name: str) -> dict[str, Any]:
    metric = METRICS[metric_name]
    memory = metric_name == "memory"
    scale = GIB if memory else 1
    references = [((gpu.memory_total - gpu.reserved) / GIB, "usable")] if memory else []
    spec = ChartSpec(
        title=f"{metric.title}, {RANGES[history.range_name].label.lower()}",
        points=downsample(history.series(metric.field, scale), history.start, history.end),
        start=history.start,
        end=history.end,
        y_max=max(gpu.memory_total, 1) / GIB if memory else 100.0,
        unit=metric.unit,
        kind=metric_name,
        gap=gap_seconds(history, MAX_POINTS),
        references=references,
        tz=timezone.get_current_timezone(),
    )
    return {
        "metric": metric_name,
        "range": history.range_name,
        "title": metric.title,
        # Safe: the SVG is built from numbers, and charts.py escapes every text in it.
        "svg": mark_safe(render_chart(spec)),
        "summary": summary(spec),
        "ranges": RANGES,
        "refresh": "every 30s" if history.range_name == "hour" else "every 300s",
    }


def _sample_age(gpu: Gpu) -> float | None:
    if gpu.sampled_at is None:
        return None
    return (timezone.now() - gpu.sampled_at).total_seconds()


def _page_context(request: HtmxRequest, gpu: Gpu, form: GpuSettingsForm) -> dict[str, Any]:
    range_name = request.GET.get("range", "hour")
    range_name = range_name if range_name in RANGES else "hour"
    readings_only = bool(request.htmx) and request.htmx.target == READINGS_TARGET
    history = None if readings_only else load_history(gpu, range_name)
    age, row = _sample_age(gpu), gpu_row(gpu)
    return {
        "gpu": gpu,
        "row": row,
        "state": gpu_state(row),
        "form": form,
        "can_edit": can_operate(request.user),
        "charts": [_chart(gpu, history, m) for m in METRICS] if history else [],
        "processes": sorted(gpu.processes or [], key=lambda p: -int(p.get("memory_used", 0))),
        "sample_age": age,
        "stale": age is None or age > settings.GPUFLEET_HEARTBEAT_TIMEOUT,
        "accounting": memory_accounting(gpu, row),
    }


def memory_accounting(gpu: Gpu, row: GpuRow) -> dict[str, Any]:
    """What placement sees here: reserve, claims (by instance), foreign use, room left."""
    claims = gpu.claims.select_related("instance__deployment").order_by("-claimed")
    return {
        "reserved": gpu.reserved,
        "claimed": row["claimed"],
        "foreign": gpu.foreign_memory,
        "free": gpu.free_for_placement,
        "load_pct": row["load_pct"],
        "oom_risk": row["oom_risk"],
        "warn_pct": round(100 * settings.GPUFLEET_OOM_WARN),
        "claims": list(claims),
    }


@require_GET
def gpu_detail(request: HtmxRequest, gpu_id: str) -> HttpResponse:
    gpu = _get_gpu(gpu_id)
    context = _page_context(request, gpu, GpuSettingsForm.for_gpu(gpu))
    return render(request, "inventory/gpu_detail.html", context)


def _save(gpu: Gpu, form: GpuSettingsForm) -> Gpu | None:
    """Apply a valid form through the action; model errors land on the form's fields."""
    try:
        return do_update_gpu_settings(gpu, **form.changes())
    except ValidationError as error:
        form.add_model_errors(error)
        return None


def _settings_fragment(
    request: HttpRequest, gpu: Gpu, form: GpuSettingsForm, saved: bool
) -> HttpResponse:
    context = {
        "gpu": gpu,
        "form": form,
        "can_edit": can_operate(request.user),
        "saved": saved,
        "state": gpu_state(gpu_row(gpu)),
        "oob": saved,
    }
    return render(request, "inventory/_gpu_settings_form.html", context)


@require_http_methods(["GET", "POST"])
def gpu_settings(request: HtmxRequest, gpu_id: str) -> HttpResponse:
    gpu = _get_gpu(gpu_id)
    if request.method == "GET":
        return _settings_fragment(request, gpu, GpuSettingsForm.for_gpu(gpu), saved=False)
    require_operator(request.user, "change GPU settings")
    form = GpuSettingsForm.for_gpu(gpu, request.POST)
    updated = _save(gpu, form) if form.is_valid() else None
    if updated is not None and not request.htmx:
        return redirect("inventory:gpu", gpu_id=gpu.pk)
    if updated is not None:
        return _settings_fragment(request, updated, GpuSettingsForm.for_gpu(updated), saved=True)
    if request.htmx:
        return _settings_fragment(request, gpu, form, saved=False)
    context = _page_context(request, gpu, form)
    return render(request, "inventory/gpu_detail.html", context, status=422)


@require_GET
def gpu_chart(request: HtmxRequest, gpu_id: str) -> HttpResponse:
    gpu = _get_gpu(gpu_id)
    range_name = request.GET.get("range", "hour")
    metric = request.GET.get("metric", "util")
    if range_name not in RANGES or metric not in METRICS:
        allowed = f"range: {', '.join(RANGES)}; metric: {', '.join(METRICS)}"
        return HttpResponseBadRequest(f"Unknown range or metric ({allowed}).")
    chart = _chart(gpu, load_history(gpu, range_name), metric)
    return render(request, "inventory/_gpu_chart.html", {"gpu": gpu, "chart": chart})
