"""The deployments list, one deployment's page, and its start / stop / scale / delete
buttons (operators; htmx posts answered with the summary fragment)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseLocation

from core.access import can_operate, require_operator
from scheduling import actions
from scheduling.choices import DesiredState
from scheduling.forms import ScaleForm, joined
from scheduling.models import Deployment
from scheduling.views import fragments

ACTIONS: dict[str, Callable[[Deployment], Any]] = {
    "start": lambda d: actions.do_set_desired(d, DesiredState.RUNNING),
    "stop": lambda d: actions.do_set_desired(d, DesiredState.STOPPED),
    "delete": actions.do_delete_deployment,
}


def _deployment_or_404(deployment_id: UUID) -> Deployment:
    deployment = fragments.get_deployment(deployment_id)
    if deployment is None:
        raise Http404(f"No deployment {deployment_id}.")
    return deployment


@require_GET
def deployment_list(request: HttpRequest) -> HttpResponse:
    context = {"rows": fragments.list_rows(), "can_operate": can_operate(request.user)}
    return render(request, "scheduling/list.html", context)


@require_GET
def deployment_detail(request: HttpRequest, deployment_id: UUID) -> HttpResponse:
    deployment = _deployment_or_404(deployment_id)
    context = fragments.detail_context(deployment, can_operate(request.user))
    return render(request, "scheduling/detail.html", context)


def _answer(request: HttpRequest, deployment_id: UUID, message: str = "") -> HttpResponse:
    """The summary fragment after a button (htmx), else back to the page."""
    detail = reverse("scheduling:detail", args=[deployment_id])
    deployment = fragments.get_deployment(deployment_id)
    if not request.htmx:  # type: ignore[attr-defined]
        return redirect(detail if deployment else reverse("scheduling:list"))
    if deployment is None:
        return HttpResponseLocation(reverse("scheduling:list"))
    context = fragments.summary_context(deployment, True) | {"message": message}
    return render(request, "scheduling/_deployment_summary.html", context)


@require_POST
def deployment_action(request: HttpRequest, deployment_id: UUID, action: str) -> HttpResponse:
    require_operator(request.user, "start, stop or delete deployments")
    if action not in ACTIONS:
        raise Http404(f"No such action: {action}")
    deployment = _deployment_or_404(deployment_id)
    message = ""
    try:
        ACTIONS[action](deployment)
    except ValidationError as error:
        message = " ".join(error.messages)
    if action == "delete" and request.htmx and not message:  # type: ignore[attr-defined]
        return HttpResponseLocation(reverse("scheduling:list"))
    return _answer(request, deployment_id, message)


@require_POST
def deployment_scale(request: HttpRequest, deployment_id: UUID) -> HttpResponse:
    require_operator(request.user, "scale deployments")
    deployment = _deployment_or_404(deployment_id)
    form = ScaleForm(request.POST)
    if not form.is_valid():
        return _answer(request, deployment_id, joined(form.errors["replicas"]))
    if deployment.desired_state == DesiredState.DELETING:
        return _answer(request, deployment_id, "This deployment is being deleted.")
    try:
        actions.do_scale(deployment, form.cleaned_data["replicas"])
    except ValidationError as error:
        return _answer(request, deployment_id, " ".join(error.messages))
    return _answer(request, deployment_id)
