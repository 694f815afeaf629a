"""``/api/v1/instances``: one replica's state, claims, runs and log."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from core.requests import ApiRequest
from models_app.api.schemas import ErrorOut
from scheduling import backend_logs
from scheduling.api.deployments import get_deployment
from scheduling.api.schemas import InstanceOut, LogOut, RunOut
from scheduling.models import Instance
from scheduling.presenters import instance_data

router = Router(tags=["instances"])
ERRORS: dict[int | str, Any] = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut}


class LogQuery(Schema):
    lines: int = Field(100, ge=1, le=2000)
    run: int | None = Field(None, ge=1, description="run number; default: the latest")


def get_instance(instance_id: UUID) -> Instance:
    instance = Instance.objects.select_related("deployment", "node").filter(pk=instance_id).first()
    if instance is None:
        raise HttpError(404, f"Instance {instance_id} not found.")
    return instance


@router.get(
    "/deployments/{uuid:deployment_id}/instances",
    response={200: list[InstanceOut], **ERRORS},
    summary="A deployment's instances, stopped ones included",
)
def list_instances(request: ApiRequest, deployment_id: UUID) -> list[dict[str, Any]]:
    deployment = get_deployment(deployment_id)
    rows = deployment.instances.select_related("node", "deployment").order_by("created_at")
    return [instance_data(i) for i in rows]


@router.get(
    "/instances/{uuid:instance_id}",
    response={200: InstanceOut, **ERRORS},
    summary="One instance: state, where, claims, estimated and measured memory",
)
def instance_detail(request: ApiRequest, instance_id: UUID) -> dict[str, Any]:
    return instance_data(get_instance(instance_id))


@router.get(
    "/instances/{uuid:instance_id}/runs",
    response={200: list[RunOut], **ERRORS},
    summary="Every start of the instance's backend and how it ended (restart history)",
)
def instance_runs(request: ApiRequest, instance_id: UUID) -> Any:
    return list(get_instance(instance_id).runs.order_by("-number"))


@router.get(
    "/instances/{uuid:instance_id}/logs",
    response={200: LogOut, **ERRORS},
    summary="The last lines of a run's log (the backend's stdout and stderr)",
)
def instance_logs(request: ApiRequest, instance_id: UUID, query: Query[LogQuery]) -> Any:
    instance = get_instance(instance_id)
    runs = instance.runs.order_by("-number")
    run = runs.filter(number=query.run).first() if query.run else runs.first()
    if run is None:
        if query.run:
            raise HttpError(404, f"Run {query.run} of instance {instance_id} not found.")
        return {"instance_id": instance.pk, "run": None, "lines": []}
    lines = backend_logs.tail(Path(run.log_path), lines=query.lines)
    return {"instance_id": instance.pk, "run": run.number, "lines": lines}
