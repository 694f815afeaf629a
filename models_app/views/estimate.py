"""The estimate page: pick a model and settings, see the memory per device as a stacked bar.

The form posts (with its CSRF token); htmx re-posts it as the settings change and swaps
only the result, and the address bar follows with the same settings as a query
(``HX-Push-Url``), so that an estimate is still a link that can be shared. Opening such a
link (a GET) estimates a file in a storage root at once, but never makes the server
fetch a URL or the hub: the form comes back filled in and waits for a press (a POST).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from core.access import require_operator
from models_app import estimate_service
from models_app.forms import CONTEXT_CHOICES, EstimateForm
from models_app.presenters import COMPONENT_LABELS, bars, breakdown, split_text

FORM_FIELD_FOR = {
    "path": "model",
    "url": "model",
    "hf_repo": "model",
    "hf_file": "model",
    "source": "model",
    "gpus": "gpus",
    "devices": "extra_gpus",
}


def _report(
    request: HttpRequest, form: EstimateForm, fetch: bool
) -> tuple[estimate_service.Report | None, bool]:
    """The report, and whether a remote source is waiting for a POST to be read."""
    if not form.is_valid():
        return None, False
    try:
        source = estimate_service.parse_reference(form.cleaned_data["model"])
        source.check()
        if source.remote:
            require_operator(request.user, "read models from a URL or the hub")
        if source.remote and not fetch:
            return None, True
        return estimate_service.run(
            source, form.run_settings(), form.targets(), form.cleaned_data["margin_mib"] << 20
        ), False
    except estimate_service.EstimateInputError as error:
        form.add_error(FORM_FIELD_FOR.get(error.field), error.message)
        return None, False


def _shareable(data: QueryDict) -> str:
    """The page's address with the form's settings as a query (no CSRF token)."""
    fields = [(k, v) for k, values in data.lists() if k != "csrfmiddlewaretoken" for v in values]
    return f"{reverse('models_app:estimate')}?{urlencode(fields)}"


@require_http_methods(["GET", "POST"])
def estimate_page(request: HttpRequest) -> HttpResponse:
    data = request.POST if request.method == "POST" else request.GET
    form = EstimateForm(data) if "model" in data else EstimateForm()
    report, waiting = (
        _report(request, form, fetch=request.method == "POST") if form.is_bound else (None, False)
    )
    context: dict[str, Any] = {
        "form": form,
        "report": report,
        "waiting_for_post": waiting,
        "bars": bars(report) if report else None,
        "breakdown": breakdown(report) if report else None,
        "plan_split": split_text(report.layers_plan.tensor_split)
        if report and report.layers_plan and len(report.targets) > 1
        else "",
        "legend": list(COMPONENT_LABELS.items()),
        "context_capped": report is not None and estimate_service.context_capped(report),
        "local_models": estimate_service.local_models(),
        "context_choices": CONTEXT_CHOICES,
    }
    if getattr(request, "htmx", False):
        response = render(request, "models_app/_estimate_result.html", context)
        if request.method == "POST" and form.is_bound:
            response["HX-Push-Url"] = _shareable(data)
        return response
    return render(request, "models_app/estimate.html", context)
