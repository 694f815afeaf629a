"""Django admin for inference keys and usage. Keys are created on the keys page or through
the API (the plain key is shown once there); here they are listed, and revoked through
the same action as the pages. Usage rows are written by the gateway: read-only."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from gateway.actions import do_revoke_key
from gateway.models import InferenceKey, UsageMinute


@admin.register(InferenceKey)
class InferenceKeyAdmin(ReadOnlyAdmin):
    list_display = ("name", "prefix", "status", "served_names", "expires_at", "last_used_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    exclude = ("digest",)
    actions = ["revoke"]

    @admin.display(description="Status")
    def status(self, key: InferenceKey) -> str:
        return key.status

    @admin.action(description="Revoke the selected keys", permissions=["operate"])
    def revoke(self, request: HttpRequest, rows: QuerySet[InferenceKey]) -> None:
        active = [key for key in rows if key.revoked_at is None]
        for key in active:
            do_revoke_key(key)
        self.message_user(request, f"{len(active)} key(s) revoked.", messages.SUCCESS)


@admin.register(UsageMinute)
class UsageMinuteAdmin(ReadOnlyAdmin):
    list_display = (
        "minute",
        "served_name",
        "key",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "cold_starts",
    )
    list_filter = ("served_name",)
    list_select_related = ("key",)
    date_hierarchy = "minute"
