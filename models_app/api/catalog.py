"""``/api/v1/models``: the catalog. Reading is for everyone logged in; adding (which makes
the server reach the hub or a URL) and removing are for operators."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from django.db.models import QuerySet
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as InputError
from pydantic import ConfigDict

from core.access import require_operator
from core.requests import ApiRequest
from inventory.models import Node
from models_app import catalog
from models_app.api.lookups import get_model, get_node
from models_app.api.schemas import (
    CatalogModelDetailOut,
    CatalogModelOut,
    ConflictOut,
    ErrorOut,
)
from models_app.models import CatalogModel

router = Router(tags=["models"])
ERRORS: dict[int | str, Any] = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut}


class AddModelIn(Schema):
    """A hub file (``hf_repo`` + ``hf_file``, any shard of a split model), a ``url``, or a
    ``path`` already on a ``node`` (inside one of its storage roots)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["hf", "url", "path"]
    hf_repo: str = Field("", max_length=200, description="e.g. Qwen/Qwen2.5-7B-Instruct-GGUF")
    hf_file: str = Field("", max_length=500)
    revision: str = Field("main", max_length=200)
    url: str = Field("", max_length=2000)
    sha256: str = Field("", max_length=64, description="for a URL: checked after download")
    node: str = Field("", max_length=200, description="for a path: the node's id or name")
    path: str = Field("", max_length=4096, description="for a path: the .gguf file on the node")
    display_name: str = Field("", max_length=200)


class HubModelOut(Schema):
    name: str = Field(description="the model (split models without the shard suffix)")
    first: str = Field(description="the file to add it by")
    shards: int
    size: int
    complete: bool = Field(description="false when shards are missing from the repo")


class HubQuery(Schema):
    repo: str = Field(max_length=200)
    revision: str = Field("main", max_length=200)


def catalog_failure(error: catalog.CatalogError, loc: tuple[str, ...] = ()) -> Any:
    """The error's answer; a 422 names ``loc`` (default: the body field it is about)."""
    if error.status == 409:
        existing = error.existing.pk if error.existing is not None else None
        return Status(409, {"detail": error.message, "existing_id": existing})
    if error.status == 422:
        loc = loc or ("body", "payload", error.field)
        raise InputError([{"loc": loc, "msg": error.message}])
    raise HttpError(error.status, error.message)


def _node(ref: str) -> Node:
    if not ref.strip():
        raise InputError([{"loc": ("body", "payload", "node"), "msg": "This field is required."}])
    return get_node(ref.strip())


@router.get("/models", response={200: list[CatalogModelOut], 401: ErrorOut}, summary="The catalog")
def list_models(request: ApiRequest) -> QuerySet[CatalogModel]:
    return CatalogModel.objects.all()


@router.get(
    "/models/hub",
    response={200: list[HubModelOut], **ERRORS, 502: ErrorOut},
    summary="The GGUF models of a Hugging Face repo (operators)",
)
def hub_listing(request: ApiRequest, query: Query[HubQuery]) -> Any:
    require_operator(request.auth, "browse the hub")
    try:
        return catalog.hub_models(query.repo, query.revision or "main")
    except catalog.CatalogError as error:
        return catalog_failure(error, ("query", "repo"))


@router.post(
    "/models",
    response={201: CatalogModelDetailOut, 409: ConflictOut, 502: ErrorOut, **ERRORS},
    summary="Add a model: its files and GGUF facts are read from the source now",
)
def add_model(request: ApiRequest, payload: AddModelIn) -> Any:
    require_operator(request.auth, "add models")
    user = request.auth
    try:
        if payload.source == "hf":
            model = catalog.add_hf_model(
                payload.hf_repo, payload.hf_file, payload.revision, user, payload.display_name
            )
        elif payload.source == "url":
            model = catalog.add_url_model(payload.url, user, payload.display_name, payload.sha256)
        else:
            model = catalog.add_path_model(
                _node(payload.node), payload.path, user, payload.display_name
            )
    except catalog.CatalogError as error:
        return catalog_failure(error)
    return Status(201, model)


@router.get(
    "/models/{uuid:model_id}",
    response={200: CatalogModelDetailOut, **ERRORS},
    summary="One model, with the nodes whose GPUs could hold it",
)
def model_detail(request: ApiRequest, model_id: UUID) -> CatalogModel:
    return get_model(model_id)


@router.delete(
    "/models/{uuid:model_id}",
    response={204: None, 409: ErrorOut, **ERRORS},
    summary="Remove a model from the catalog (once no node holds a copy)",
)
def remove_model(request: ApiRequest, model_id: UUID) -> Any:
    require_operator(request.auth, "remove models")
    model = get_model(model_id)
    copies = model.copies.count()
    if copies:
        raise HttpError(409, f"{model} still has {copies} copies on nodes; delete them first.")
    model.delete()
    return Status(204, None)
