"""Schemas shared by the catalog and download endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Field, Schema

from models_app.choices import DownloadState, SourceKind
from models_app.fleet_fit import node_fits
from models_app.models import CatalogModel, ModelFile


class ErrorOut(Schema):
    detail: str


class ConflictOut(Schema):
    detail: str
    existing_id: UUID | None = Field(description="the catalog entry or copy already there")


class FileOut(Schema):
    name: str = Field(description="path in the repo (split models: every shard)")
    size: int = Field(description="bytes")
    sha256: str = Field(description="as the source gives it; empty when it gives none")


class CatalogModelOut(Schema):
    id: UUID
    display_name: str
    source_kind: SourceKind
    source: str = Field(description="repo/file@revision, URL, or node:path")
    hf_repo: str
    hf_filename: str
    revision: str
    commit: str = Field(description="the commit the revision pointed to when added")
    url: str
    files: list[FileOut]
    size_bytes: int
    architecture: str
    quantization: str
    parameter_count: int
    context_length: int
    created_at: datetime

    @staticmethod
    def resolve_source(obj: CatalogModel) -> str:
        return obj.source_label

    @staticmethod
    def resolve_url(obj: CatalogModel) -> str:
        return obj.shown_url


class NodeFitOut(Schema):
    node: str
    gpus: list[str] = Field(description="GPUs that hold the model alone (gpuN)")
    split_over: int = Field(description="GPUs that hold it together when none does alone")
    needed_bytes: int = Field(description="one GPU's need at a 4096-token context")


class CatalogModelDetailOut(CatalogModelOut):
    fits: list[NodeFitOut] = Field(description="per node, by free-for-placement memory now")

    @staticmethod
    def resolve_fits(obj: CatalogModel) -> list[dict[str, Any]]:
        return [
            {
                "node": f.node,
                "gpus": list(f.single),
                "split_over": f.split,
                "needed_bytes": f.needed,
            }
            for f in node_fits(obj)
        ]


class ModelFileOut(Schema):
    id: UUID
    model_id: UUID
    model_name: str
    node_id: UUID
    node_name: str
    storage_root: str
    path: str = Field(description="absolute path of the (first) file on the node")
    state: DownloadState
    bytes_done: int
    bytes_total: int
    percent: float
    progress: str = Field(
        description='"98.9 %"; "stopped at 98.9 %" for a failed or cancelled copy (the bytes '
        "on disk are kept for a resume)"
    )
    speed: float = Field(description="bytes per second, recent; 0 unless downloading")
    eta_seconds: float | None = Field(description="null unless downloading")
    sha256: str = Field(description="of the (first) file once verified")
    error: str
    retrying: str = Field(
        description='while connection retries run: "retrying: <reason>, attempt n of m"'
    )
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_used_at: datetime | None

    @staticmethod
    def resolve_progress(obj: ModelFile) -> str:
        return obj.progress_text

    @staticmethod
    def resolve_speed(obj: ModelFile) -> float:
        return obj.shown_speed or 0.0

    @staticmethod
    def resolve_eta_seconds(obj: ModelFile) -> float | None:
        return obj.shown_eta

    @staticmethod
    def resolve_retrying(obj: ModelFile) -> str:
        return obj.shown_retrying

    @staticmethod
    def resolve_model_name(obj: ModelFile) -> str:
        return obj.model.display_name

    @staticmethod
    def resolve_node_name(obj: ModelFile) -> str:
        return obj.node.name
