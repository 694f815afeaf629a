"""Admin base classes shared by the apps."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from core.access import can_operate
from core.models import LiveEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the system: listed and shown, never added, changed or deleted here.
    Actions declared with ``permissions=["operate"]`` are offered to operators."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return can_operate(request.user)


@admin.register(LiveEvent)
class LiveEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "kind")
    ordering = ("-id",)
    show_full_result_count = False

    @admin.display(description="Kind")
    def kind(self, event: LiveEvent) -> str:
        payload = event.payload if isinstance(event.payload, dict) else {}
        return str(payload.get("kind", "?"))
