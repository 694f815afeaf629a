"""Django admin for deployments, instances, claims and runs. Rows change only through
``scheduling.actions`` / ``lifecycle`` (placement, the workers and agents own them), so
the admin lists and shows them, and offers start, stop and delete as actions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from scheduling import actions, lifecycle
from scheduling.choices import DesiredState
from scheduling.models import Deployment, Eviction, GpuClaim, Instance, InstanceRun
from scheduling.presenters import readings_data


def _apply(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    rows: QuerySet[Any],
    change: Callable[[Any], Any],
) -> None:
    done = 0
    for row in rows:
        try:
            change(row)
            done += 1
        except ValidationError as error:
            model_admin.message_user(
                request, f"{row}: {'; '.join(error.messages)}", messages.WARNING
            )
    model_admin.message_user(request, f"{done} of {rows.count()} changed.")


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = (
        "served_name",
        "model",
        "kind",
        "backend",
        "replicas",
        "parallel",
        "desired_state",
        "policy",
        "priority",
    )
    list_filter = ("desired_state", "kind", "backend", "policy")
    search_fields = ("served_name", "model__display_name")
    actions = ["start", "stop", "delete_deployments"]

    @admin.action(description="Start the selected deployments", permissions=["operate"])
    def start(self, request: HttpRequest, rows: QuerySet[Deployment]) -> None:
        _apply(self, request, rows, lambda d: actions.do_set_desired(d, DesiredState.RUNNING))

    @admin.action(description="Stop the selected deployments", permissions=["operate"])
    def stop(self, request: HttpRequest, rows: QuerySet[Deployment]) -> None:
        _apply(self, request, rows, lambda d: actions.do_set_desired(d, DesiredState.STOPPED))

    @admin.action(description="Delete (stop every instance, then remove)", permissions=["operate"])
    def delete_deployments(self, request: HttpRequest, rows: QuerySet[Deployment]) -> None:
        _apply(self, request, rows, actions.do_delete_deployment)


@admin.register(Instance)
class InstanceAdmin(ReadOnlyAdmin):
    list_display = (
        "short_id",
        "deployment",
        "node",
        "state",
        "backend",
        "port",
        "slots_busy",
        "restart_count",
        "updated_at",
    )
    list_filter = ("state", "backend", "node", "placement_kind")
    search_fields = ("id", "deployment__served_name")
    actions = ["stop_instances"]

    @admin.display(description="slots busy")
    def slots_busy(self, instance: Instance) -> str:
        shown = readings_data(instance)
        return f"{shown['busy']}/{shown['slots']}" if shown else "–"

    @admin.action(description="Stop the selected instances", permissions=["operate"])
    def stop_instances(self, request: HttpRequest, rows: QuerySet[Instance]) -> None:
        _apply(self, request, rows.select_related("node", "deployment"), lifecycle.do_request_stop)


@admin.register(GpuClaim)
class GpuClaimAdmin(ReadOnlyAdmin):
    list_display = ("instance", "gpu", "position", "estimated", "measured", "claimed")
    list_filter = ("gpu__node",)


@admin.register(InstanceRun)
class InstanceRunAdmin(ReadOnlyAdmin):
    list_display = ("instance", "number", "node", "started_at", "ready_at", "ended_at", "outcome")
    list_filter = ("node",)


@admin.register(Eviction)
class EvictionAdmin(ReadOnlyAdmin):
    list_display = ("at", "text", "evicted", "for_deployment")
    list_filter = ("evicted", "for_deployment")
