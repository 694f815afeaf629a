"""Django admin for the catalog and model copies. Copies are read-only here: they change
state only through the actions in models_app.actions (the worker owns a running download)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.access import can_operate
from models_app import actions
from models_app.models import CatalogModel, ModelFile


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = ("display_name", "source_kind", "source_label", "quantization", "size_bytes")
    list_filter = ("source_kind", "architecture", "quantization")
    search_fields = ("display_name", "hf_repo", "hf_filename", "url", "path")
    readonly_fields = (
        "files",
        "size_bytes",
        "architecture",
        "quantization",
        "parameter_count",
        "context_length",
        "facts",
        "commit",
        "created_at",
        "created_by",
    )


@admin.register(ModelFile)
class ModelFileAdmin(admin.ModelAdmin):
    list_display = ("model", "node", "state", "bytes_done", "bytes_total", "path", "updated_at")
    list_filter = ("state", "node")
    search_fields = ("path", "model__display_name")

    actions = ["cancel", "retry", "delete_files"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # downloads are requested from the dashboard or the API

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return can_operate(request.user)

    def _apply(
        self, request: HttpRequest, copies: QuerySet[ModelFile], action: Callable[[ModelFile], Any]
    ) -> None:
        done = 0
        for copy in copies.select_related("model", "node"):
            try:
                done += 1 if action(copy) is not False else 0
            except actions.DownloadRefused as error:
                self.message_user(request, f"{copy}: {error.message}", messages.WARNING)
        self.message_user(request, f"{done} of {copies.count()} copies changed.")

    @admin.action(description="Cancel the selected downloads", permissions=["operate"])
    def cancel(self, request: HttpRequest, copies: QuerySet[ModelFile]) -> None:
        self._apply(request, copies, actions.do_cancel)

    @admin.action(description="Retry the selected downloads (resume)", permissions=["operate"])
    def retry(self, request: HttpRequest, copies: QuerySet[ModelFile]) -> None:
        self._apply(request, copies, actions.do_retry)

    @admin.action(description="Delete the selected copies from disk", permissions=["operate"])
    def delete_files(self, request: HttpRequest, copies: QuerySet[ModelFile]) -> None:
        self._apply(request, copies, actions.do_request_delete)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        found = super().get_actions(request)
        found.pop("delete_selected", None)  # rows go only after the node removed the files
        return found

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
