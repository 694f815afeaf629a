"""The estimate page: pick a model and settings, see the memory per device as a stacked bar.

A GET form, so that an estimate is a link that can be shared; htmx re-requests it as
the settings change and swaps only the result (the URL follows with ``hx-push-url``).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from inventory.access import can_operate
from models_app import estimating
from models_app.forms import CONTEXT_CHOICES, EstimateForm
from models_app.presenters import COMPONENT_LABELS, bars, split_text

FORM_FIELD_FOR = {
    "path": "model",
    "url": "model",
    "hf_repo": "model",
    "hf_file": "model",
    "source": "model",
    "gpus": "gpus",
    "devices": "extra_gpus",
}


def _report(request: HttpRequest, form: EstimateForm) -> estimating.Report | None:
    if not form.is_valid():
        return None
    try:
        source = estimating.parse_reference(form.cleaned_data["model"])
        source.check()
        if source.remote and not can_operate(request.user):
            raise PermissionDenied("Only operators may read models from a URL or the hub.")
        return estimating.run(
            source, form.run_settings(), form.targets(), form.cleaned_data["margin_mib"] << 20
        )
    except estimating.EstimateInputError as error:
        form.add_error(FORM_FIELD_FOR.get(error.field), error.message)
        return None


@require_GET
def estimate_page(request: HttpRequest) -> HttpResponse:
    form = EstimateForm(request.GET) if "model" in request.GET else EstimateForm()
    report = _report(request, form) if form.is_bound else None
    context: dict[str, Any] = {
        "form": form,
        "report": report,
        "bars": bars(report) if report else None,
        "plan_split": split_text(report.layers_plan.tensor_split)
        if report and report.layers_plan and len(report.targets) > 1
        else "",
        "legend": list(COMPONENT_LABELS.items()),
        "context_capped": report is not None and estimating.context_capped(report),
        "local_models": estimating.local_models(),
        "context_choices": CONTEXT_CHOICES,
    }
    if getattr(request, "htmx", False):
        return render(request, "models_app/_estimate_result.html", context)
    return render(request, "models_app/estimate.html", context)
