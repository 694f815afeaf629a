"""``/api/v1/models/download(s)``: copies of models on nodes: request a download, follow
its progress, cancel, retry, delete from disk; and each node's storage."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as InputError
from pydantic import ConfigDict

from core.access import require_operator
from core.requests import ApiRequest
from models_app import actions
from models_app.api.lookups import get_model, get_node
from models_app.api.schemas import ConflictOut, ErrorOut, ModelFileOut
from models_app.choices import DownloadState
from models_app.models import ModelFile
from models_app.storage import node_storage

router = Router(tags=["downloads"])
ERRORS: dict[int | str, Any] = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut}


class DownloadIn(Schema):
    model_config = ConfigDict(extra="forbid")

    model_id: UUID
    target_node: str = Field(max_length=200, description="the node's id or name")
    download_path: str | None = Field(
        None,
        max_length=4096,
        description="directory inside one of the node's storage roots: absolute, or "
        "relative to its first root; left out: <root>/<owner>__<repo>",
    )


class DownloadFilter(Schema):
    node: str | None = Field(None, description="node id or name")
    state: DownloadState | None = None
    model: UUID | None = None


class RootOut(Schema):
    root: str
    free_bytes: int | None = Field(description="as the node's agent last reported")
    used_bytes: int = Field(description="by the copies gpufleet keeps there")
    copies: list[ModelFileOut]


def get_copy(copy_id: UUID) -> ModelFile:
    copy = ModelFile.objects.select_related("model", "node").filter(pk=copy_id).first()
    if copy is None:
        raise HttpError(404, f"Download {copy_id} not found.")
    return copy


def refused(error: actions.DownloadRefused) -> Any:
    if error.status == 409:
        existing = error.existing.pk if error.existing is not None else None
        return Status(409, {"detail": error.message, "existing_id": existing})
    if error.status == 422:
        field = error.field or "model_id"
        raise InputError([{"loc": ("body", "payload", field), "msg": error.message}])
    raise HttpError(error.status, error.message)


@router.post(
    "/models/download",
    response={202: ModelFileOut, 409: ConflictOut, 422: Any, 507: ErrorOut, **ERRORS},
    summary="Download a catalog model to a node (operators)",
    description="Queued on the target node's worker; follow it with GET /models/downloads/{id}. "
    "409 when the node already holds or is downloading the model (existing_id names it), "
    "422 for a path outside the node's storage roots, 507 when its disk cannot hold it.",
)
def request_download(request: ApiRequest, payload: DownloadIn) -> Any:
    require_operator(request.auth, "download models")
    model, node = get_model(payload.model_id), get_node(payload.target_node)
    try:
        copy = actions.do_request_download(
            model,
            node,
            payload.download_path,
            request.auth,
        )
    except actions.DownloadRefused as error:
        return refused(error)
    return Status(202, get_copy(copy.pk))


@router.get(
    "/models/downloads",
    response={200: list[ModelFileOut], **ERRORS},
    summary="Copies of models on nodes, newest first, with their download progress",
)
def list_downloads(request: ApiRequest, filters: Query[DownloadFilter]) -> QuerySet[ModelFile]:
    copies = ModelFile.objects.select_related("model", "node")
    if filters.node:
        copies = copies.filter(node=get_node(filters.node))
    if filters.state:
        copies = copies.filter(state=filters.state)
    if filters.model:
        copies = copies.filter(model_id=filters.model)
    return copies


@router.get(
    "/models/downloads/{uuid:copy_id}",
    response={200: ModelFileOut, **ERRORS},
    summary="One copy: state, bytes done, speed, ETA, error",
)
def download_detail(request: ApiRequest, copy_id: UUID) -> ModelFile:
    return get_copy(copy_id)


@router.delete(
    "/models/downloads/{uuid:copy_id}",
    response={200: ModelFileOut, 409: ErrorOut, **ERRORS},
    summary="Cancel a queued or running download (its bytes stay on disk for a retry)",
)
def cancel_download(request: ApiRequest, copy_id: UUID) -> ModelFile:
    require_operator(request.auth, "cancel downloads")
    copy = get_copy(copy_id)
    if not actions.do_cancel(copy):
        raise HttpError(
            409,
            f"Only queued or running downloads can be cancelled ({copy.state}); "
            f"DELETE /api/v1/models/downloads/{copy.pk}/files deletes the files.",
        )
    return get_copy(copy_id)


@router.post(
    "/models/downloads/{uuid:copy_id}/retry",
    response={200: ModelFileOut, 409: ConflictOut, **ERRORS},
    summary="Queue a failed or cancelled download again; it resumes from the bytes on disk",
)
def retry_download(request: ApiRequest, copy_id: UUID) -> Any:
    require_operator(request.auth, "retry downloads")
    try:
        actions.do_retry(get_copy(copy_id))
    except actions.DownloadRefused as error:
        return refused(error)
    return get_copy(copy_id)


@router.delete(
    "/models/downloads/{uuid:copy_id}/files",
    response={202: ModelFileOut, 409: ErrorOut, **ERRORS},
    summary="Delete a copy from its node's disk (a running download is cancelled first)",
)
def delete_files(request: ApiRequest, copy_id: UUID) -> Any:
    require_operator(request.auth, "delete model files")
    try:
        actions.do_request_delete(get_copy(copy_id))
    except actions.DownloadRefused as error:
        raise HttpError(error.status, error.message) from error
    return Status(202, get_copy(copy_id))


@router.get(
    "/nodes/{uuid:node_id}/storage",
    response={200: list[RootOut], **ERRORS},
    tags=["nodes"],
    summary="A node's storage roots: free space, and the copies kept in each",
)
def storage(request: ApiRequest, node_id: UUID) -> list[dict[str, Any]]:
    return [
        {"root": r.root, "free_bytes": r.free, "used_bytes": r.used, "copies": r.copies}
        for r in node_storage(get_node(str(node_id)))
    ]
