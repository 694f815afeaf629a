"""Creating a deployment: the form, and its live dry run (where one replica would go
now, or why it would not fit), posted by htmx as the fields change."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseLocation

from core.access import require_operator
from inventory.models import Gpu
from inventory.presenters import memory_load
from scheduling import actions
from scheduling.choices import PlacementKind
from scheduling.forms import DeploymentForm, joined
from scheduling.models import Deployment
from scheduling.placement import Placement
from scheduling.presenters import placement_data

# Fields the dry run does not need (a name is not chosen yet while trying settings).
NOT_PREVIEWED = ("served_name", "replicas")


@require_http_methods(["GET", "POST"])
def deployment_new(request: HttpRequest) -> HttpResponse:
    require_operator(request.user, "create deployments")
    if request.method == "GET":
        return render(request, "scheduling/new.html", {"form": DeploymentForm()})
    form = DeploymentForm(request.POST)
    if form.is_valid():
        only, exclude = form.gpu_selection()
        try:
            deployment = actions.do_create_deployment(
                user=request.user, only_gpus=only, exclude_gpus=exclude, **form.deployment_fields()
            )
        except ValidationError as error:
            form.add_model_errors(error)
        else:
            url = reverse("scheduling:detail", args=[deployment.pk])
            return HttpResponseLocation(url) if request.htmx else redirect(url)  # type: ignore[attr-defined]
    status = 200 if request.htmx else 422  # type: ignore[attr-defined]
    return render(request, "scheduling/new.html", {"form": form}, status=status)


def _labelled(form: DeploymentForm, errors: dict[str, Any]) -> list[str]:
    """``Label: message`` per field (the form's labels; the field name where it has none)."""
    lines = []
    for name, messages in errors.items():
        field = form.fields.get(name)
        label = (field.label if field else None) or name.replace("_", " ").capitalize()
        lines.append(f"{label}: {joined(messages)}" if name != "__all__" else joined(messages))
    return lines


def _form_errors(form: DeploymentForm) -> list[str]:
    wanted = {k: v for k, v in form.errors.items() if k not in NOT_PREVIEWED}
    return _labelled(form, wanted)


def _model_errors(form: DeploymentForm, deployment: Deployment) -> list[str]:
    try:
        deployment.full_clean(exclude=["only_gpus", "exclude_gpus", *NOT_PREVIEWED])
    except ValidationError as error:
        return _labelled(form, error.message_dict)
    return []


def placement_bars(placement: Placement) -> dict[str, Any]:
    """The placement as plain data, each GPU with a bar: in use now, this replica, free."""
    data = placement_data(placement)
    data["kind_label"] = PlacementKind(data["kind"]).label
    gpus = Gpu.objects.in_bulk([g["id"] for g in data["gpus"]])
    by_id = {str(pk): gpu for pk, gpu in gpus.items()}
    for item in data["gpus"]:
        gpu = by_id[item["id"]]
        total = gpu.memory_total or 1
        in_use = min(memory_load(gpu), total)
        item["in_use"] = in_use
        item["total"] = gpu.memory_total
        item["in_use_pct"] = round(100 * in_use / total, 2)
        item["pct"] = round(min(100 * item["bytes"] / total, 100 - item["in_use_pct"]), 2)
    return data


@require_POST
def deployment_preview(request: HttpRequest) -> HttpResponse:
    """Where one replica would go with these settings (claims nothing)."""
    require_operator(request.user, "create deployments")
    form = DeploymentForm(request.POST)
    form.is_valid()
    errors = _form_errors(form)
    context: dict[str, Any] = {"errors": errors}
    if not errors:
        only, exclude = form.gpu_selection()
        deployment = Deployment(**form.deployment_fields())
        context["errors"] = _model_errors(form, deployment)
        if not context["errors"]:
            outcome = actions.preview(deployment, only, exclude)
            context["fits"] = outcome["fits"]
            context["reasons"] = outcome.get("reasons", [])
            context["notes"] = outcome.get("notes", [])
            if outcome["fits"]:
                context["placement"] = placement_bars(outcome["placement"])
    return render(request, "scheduling/_preview.html", context)
