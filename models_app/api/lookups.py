"""Finding the rows an API path or body names: a 404 naming what was asked for."""

from __future__ import annotations

from uuid import UUID

from ninja.errors import HttpError

from inventory.models import Node
from models_app.models import CatalogModel


def get_model(model_id: UUID) -> CatalogModel:
    model = CatalogModel.objects.filter(pk=model_id).first()
    if model is None:
        raise HttpError(404, f"Model {model_id} not found.")
    return model


def get_node(ref: str) -> Node:
    node = None
    try:
        node = Node.objects.filter(pk=UUID(ref)).first()
    except ValueError:
        node = Node.objects.filter(name=ref).first()
    if node is None:
        raise HttpError(404, f"Node {ref!r} not found.")
    return node
