"""``/api/v1/deployments``: create (validated whole first), dry run, list, detail, scale,
start, stop, delete."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import IntegrityError
from ninja import Router, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as InputError

from core.access import require_operator
from core.requests import ApiRequest
from inventory.models import Gpu
from models_app.api.lookups import get_model
from models_app.api.schemas import ErrorOut
from scheduling import actions
from scheduling.api.schemas import (
    DeploymentIn,
    DeploymentOut,
    DeploymentPatch,
    PreviewOut,
    ScaleIn,
)
from scheduling.choices import DesiredState
from scheduling.models import Deployment, served_name_taken, served_name_taken_message
from scheduling.presenters import deployment_data, placement_data

router = Router(tags=["deployments"])
ERRORS: dict[int | str, Any] = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut}


def get_deployment(deployment_id: UUID) -> Deployment:
    deployment = Deployment.objects.select_related("model").filter(pk=deployment_id).first()
    if deployment is None:
        raise HttpError(404, f"Deployment {deployment_id} not found.")
    return deployment


def _gpus(ids: list[UUID], field: str) -> list[Gpu]:
    found = Gpu.objects.in_bulk(ids)
    missing = [str(pk) for pk in ids if pk not in found]
    if missing:
        message = f"Unknown GPU id(s): {', '.join(missing)}."
        raise InputError([{"loc": ("body", "payload", field), "msg": message}])
    return [found[pk] for pk in ids]


def _unsaved(payload: DeploymentIn) -> tuple[dict[str, Any], list[Gpu], list[Gpu]]:
    fields = payload.dict(exclude={"model_id", "only_gpus", "exclude_gpus"})
    if fields["min_replicas"] is None:
        fields["min_replicas"] = fields["replicas"]
    fields["model"] = get_model(payload.model_id)
    only = _gpus(payload.only_gpus, "only_gpus")
    exclude = _gpus(payload.exclude_gpus, "exclude_gpus")
    return fields, only, exclude


def _refuse_taken(served_name: str) -> None:
    """409 when another deployment serves this name, whatever the case."""
    taken = served_name_taken(served_name)
    if taken is not None:
        raise HttpError(409, served_name_taken_message(taken))


@router.post(
    "/deployments",
    response={201: DeploymentOut, 409: ErrorOut, 422: Any, **ERRORS},
    summary="Create a deployment (operators); its replicas are placed at once",
    description="Everything is checked before anything is written: a context longer than the "
    "model's, options outside the allowed list, a selector that matches no GPU, a model no "
    "node holds or can download: 422 with the field named. 409: the served name is taken.",
)
def create_deployment(request: ApiRequest, payload: DeploymentIn) -> Any:
    require_operator(request.auth, "create deployments")
    _refuse_taken(payload.served_name)
    fields, only, exclude = _unsaved(payload)
    try:
        deployment = actions.do_create_deployment(
            user=request.auth,
            only_gpus=only,
            exclude_gpus=exclude,
            **fields,
        )
    except IntegrityError:  # created by someone else between the check and the insert
        _refuse_taken(payload.served_name)
        raise
    return Status(201, deployment_data(get_deployment(deployment.pk)))


@router.post(
    "/deployments/preview",
    response={200: PreviewOut, 422: Any, **ERRORS},
    summary="Dry run: where one replica would go now and why, claiming nothing",
)
def preview_deployment(request: ApiRequest, payload: DeploymentIn) -> dict[str, Any]:
    fields, only, exclude = _unsaved(payload)
    deployment = Deployment(**fields)
    deployment.full_clean(exclude=["only_gpus", "exclude_gpus", "served_name"])
    outcome = actions.preview(deployment, only, exclude)
    if outcome["fits"]:
        return {
            "fits": True,
            "placement": placement_data(outcome["placement"]),
            "reasons": [],
            "notes": outcome["notes"],
        }
    return outcome


@router.get("/deployments", response={200: list[DeploymentOut], **ERRORS}, summary="Deployments")
def list_deployments(request: ApiRequest) -> list[dict[str, Any]]:
    return [deployment_data(d) for d in Deployment.objects.select_related("model")]


@router.get(
    "/deployments/{uuid:deployment_id}",
    response={200: DeploymentOut, **ERRORS},
    summary="One deployment with its live instances",
)
def deployment_detail(request: ApiRequest, deployment_id: UUID) -> dict[str, Any]:
    return deployment_data(get_deployment(deployment_id))


@router.patch(
    "/deployments/{uuid:deployment_id}",
    response={200: DeploymentOut, 409: ErrorOut, 422: Any, **ERRORS},
    summary="Change settings (operators); instances started from now on use them",
    description="Checked like a new deployment (422 with the field named, nothing changed). "
    "Running instances keep the settings they started with until restarted (stop, start).",
)
def update(request: ApiRequest, deployment_id: UUID, payload: DeploymentPatch) -> Any:
    require_operator(request.auth, "change deployments")
    deployment = _changeable(deployment_id)
    changes = payload.dict(exclude_unset=True)
    only = _gpus(changes.pop("only_gpus") or [], "only_gpus") if "only_gpus" in changes else None
    exclude = (
        _gpus(changes.pop("exclude_gpus") or [], "exclude_gpus")
        if "exclude_gpus" in changes
        else None
    )
    actions.do_update_deployment(deployment, changes, only, exclude)
    return deployment_data(get_deployment(deployment_id))


@router.post(
    "/deployments/{uuid:deployment_id}/scale",
    response={200: DeploymentOut, 409: ErrorOut, 422: Any, **ERRORS},
    summary="Set the number of replicas (0 keeps the deployment without instances)",
)
def scale(request: ApiRequest, deployment_id: UUID, payload: ScaleIn) -> dict[str, Any]:
    require_operator(request.auth, "scale deployments")
    deployment = _changeable(deployment_id)
    actions.do_scale(deployment, payload.replicas, payload.min_replicas)
    return deployment_data(get_deployment(deployment_id))


def _changeable(deployment_id: UUID) -> Deployment:
    deployment = get_deployment(deployment_id)
    if deployment.desired_state == DesiredState.DELETING:
        raise HttpError(409, "This deployment is being deleted.")
    return deployment


def _set(request: ApiRequest, deployment_id: UUID, desired: DesiredState) -> dict[str, Any]:
    require_operator(
        request.auth, f"{'start' if desired == DesiredState.RUNNING else 'stop'} deployments"
    )
    actions.do_set_desired(_changeable(deployment_id), desired)
    return deployment_data(get_deployment(deployment_id))


@router.post(
    "/deployments/{uuid:deployment_id}/start",
    response={200: DeploymentOut, 409: ErrorOut, **ERRORS},
    summary="Start: run the deployment's replicas",
)
def start(request: ApiRequest, deployment_id: UUID) -> dict[str, Any]:
    return _set(request, deployment_id, DesiredState.RUNNING)


@router.post(
    "/deployments/{uuid:deployment_id}/stop",
    response={200: DeploymentOut, 409: ErrorOut, **ERRORS},
    summary="Stop every instance (the deployment and its settings stay)",
)
def stop(request: ApiRequest, deployment_id: UUID) -> dict[str, Any]:
    return _set(request, deployment_id, DesiredState.STOPPED)


@router.delete(
    "/deployments/{uuid:deployment_id}",
    response={202: DeploymentOut, **ERRORS},
    summary="Delete: its instances stop, then the deployment goes",
)
def delete(request: ApiRequest, deployment_id: UUID) -> Any:
    require_operator(request.auth, "delete deployments")
    deployment = get_deployment(deployment_id)
    actions.do_delete_deployment(deployment)
    remaining = Deployment.objects.filter(pk=deployment_id).first()
    data = deployment_data(remaining or deployment)
    return Status(202, data)
