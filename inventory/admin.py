"""Django admin for the inventory. Facts reported by agents (GPU hardware, readings,
samples, events) are read-only here; what people decide (GPU settings, maintenance
windows, token names) goes through the same model validation and actions as the pages."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from core.units import MIB
from inventory import alerts
from inventory.actions import (
    GPU_EDITABLE,
    do_delete_maintenance_window,
    do_save_maintenance_window,
    do_set_draining,
    do_update_gpu_settings,
)
from inventory.answers import answers
from inventory.models import (
    Alert,
    ApiToken,
    Gpu,
    GpuSample,
    Lease,
    MaintenanceWindow,
    Node,
)  # fmt: skip

GPU_HARDWARE = (
    "node",
    "index",
    "name",
    "uuid",
    "memory_mib",
    "driver_version",
    "cuda_version",
    "compute_capability",
    "power_limit",
    "present",
)
GPU_READING = (
    "utilization",
    "memory_used_mib",
    "temperature",
    "power_draw",
    "processes",
    "sampled_at",
    "error",
)


class GpuInline(admin.TabularInline):
    model = Gpu
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("index", "name", "uuid", "memory_total", "priority", "enabled", "present")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


NODE_REPORTED = (
    "name",
    "address",
    "storage_roots",
    "cpu_count",
    "ram_total",
    "ram_available",
    "disk_free",
    "agent_version",
    "probe_message",
    "last_heartbeat",
)
NODE_STATE = ("status", "created_at")


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    """What the agent reports (its name, address, storage roots, resources) is read-only:
    the next registration would overwrite it, or, for the name, register another node.
    Operators decide the labels (deployments select nodes by them) and the status, through
    the drain actions."""

    list_display = ("name", "status", "address", "gpu_count", "last_heartbeat", "agent_version")
    list_filter = ("status",)
    search_fields = ("name", "address")
    fieldsets = (
        (
            "Decided by operators",
            {
                "fields": ("labels",),
                "description": "Labels (an object of string → string) that deployments can "
                "require. Drain or undrain a node with the actions of the node list.",
            },
        ),
        (
            "Reported by the node's agent (read-only)",
            {
                "fields": NODE_REPORTED,
                "description": "The agent registers these; change them on the node, not here.",
            },
        ),
        (
            "State (read-only)",
            {
                "fields": NODE_STATE,
                "description": "Set by heartbeats, maintenance windows and the drain actions.",
            },
        ),
    )
    readonly_fields = NODE_REPORTED + NODE_STATE
    inlines = (GpuInline,)
    actions = ("drain", "undrain")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # nodes are registered by their agent

    def get_queryset(self, request: HttpRequest) -> QuerySet[Node]:
        return super().get_queryset(request).annotate(_gpu_count=Count("gpus"))

    @admin.display(description="GPUs", ordering="_gpu_count")
    def gpu_count(self, node: Node) -> int:
        return int(getattr(node, "_gpu_count", 0))

    @admin.action(description="Drain: move its instances, take no new work", permissions=["change"])
    def drain(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        done = sum(do_set_draining(node, True) for node in queryset)
        self.message_user(
            request,
            f"{done} node(s) now draining (only online nodes can drain): each instance is "
            "replaced elsewhere and stopped once its replacement runs.",
        )

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """Removing a node takes its GPUs, samples and copies with it (the agent's facts,
        read-only here one by one): the node's own delete permission is what it takes."""
        deleted, counts, _, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_model(self, request: HttpRequest, obj: Node) -> None:
        """A node gone for good: its deployments move to the other nodes."""
        answers.remove_node(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        for node in queryset:
            answers.remove_node(node)

    @admin.action(description="Stop draining", permissions=["change"])
    def undrain(self, request: HttpRequest, queryset: QuerySet[Node]) -> None:
        done = sum(do_set_draining(node, False) for node in queryset)
        self.message_user(request, f"{done} node(s) back online.")


@admin.register(Gpu)
class GpuAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "node",
        "index",
        "name",
        "memory_mib",
        "priority",
        "enabled",
        "present",
        "utilization",
        "temperature",
    )
    list_filter = ("enabled", "present", "node", "name")
    list_select_related = ("node",)
    search_fields = ("name", "uuid", "node__name")
    fieldsets = (
        ("Settings", {"fields": GPU_EDITABLE}),
        ("Hardware (reported by the agent)", {"fields": GPU_HARDWARE}),
        ("Last reading", {"fields": GPU_READING}),
    )
    readonly_fields = GPU_HARDWARE + GPU_READING

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # GPUs are registered by their node's agent

    @admin.display(description="Memory (MiB)", ordering="memory_total")
    def memory_mib(self, gpu: Gpu) -> str:
        return f"{gpu.memory_total // MIB:,}"

    @admin.display(description="Memory used (MiB)")
    def memory_used_mib(self, gpu: Gpu) -> str:
        return f"{gpu.memory_used // MIB:,}"

    def save_model(self, request: HttpRequest, obj: Gpu, form: ModelForm, change: bool) -> None:
        """Through the action: validated again under a row lock, and announced live."""
        changes = {
            name: form.cleaned_data[name] for name in GPU_EDITABLE if name in form.changed_data
        }
        if changes:
            do_update_gpu_settings(obj, **changes)


@admin.register(GpuSample)
class GpuSampleAdmin(ReadOnlyAdmin):
    list_display = (
        "gpu",
        "ts",
        "resolution",
        "utilization",
        "memory_mib",
        "temperature",
        "power_draw",
    )
    list_filter = ("resolution", "gpu__node")
    list_select_related = ("gpu", "gpu__node")
    search_fields = ("gpu__uuid", "gpu__node__name")
    ordering = ("-ts",)
    show_full_result_count = False

    @admin.display(description="Memory (MiB)", ordering="memory_used")
    def memory_mib(self, sample: GpuSample) -> str:
        return f"{sample.memory_used // MIB:,}"


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    list_display = ("node", "starts_at", "ends_at", "message", "created_by", "active")
    list_filter = ("node",)
    list_select_related = ("node", "created_by")
    search_fields = ("message", "node__name")
    readonly_fields = ("created_by", "created_at")
    date_hierarchy = "starts_at"

    @admin.display(boolean=True, description="Active now")
    def active(self, window: MaintenanceWindow) -> bool:
        return window.is_active()

    def save_model(
        self, request: HttpRequest, obj: MaintenanceWindow, form: ModelForm, change: bool
    ) -> None:
        if not change and request.user.is_authenticated:
            obj.created_by = request.user
        do_save_maintenance_window(obj)

    def delete_model(self, request: HttpRequest, obj: MaintenanceWindow) -> None:
        do_delete_maintenance_window(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[MaintenanceWindow]) -> None:
        for window in queryset:
            do_delete_maintenance_window(window)


class AlertStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("cleared", "Cleared")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Alert]) -> QuerySet[Alert]:
        if self.value() == "active":
            return queryset.filter(cleared_at__isnull=True)
        if self.value() == "cleared":
            return queryset.filter(cleared_at__isnull=False)
        return queryset


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = (
        "raised_at",
        "severity",
        "kind",
        "node",
        "gpu_short",
        "message",
        "cleared_at",
        "active",
    )
    list_display_links = ("raised_at",)
    list_filter = (AlertStatusFilter, "kind", "severity", "node")
    list_select_related = ("node", "gpu", "gpu__node")
    search_fields = ("message", "key", "node__name", "gpu__uuid")
    date_hierarchy = "raised_at"
    actions = ("clear",)

    @admin.display(boolean=True, description="Active")
    def active(self, alert: Alert) -> bool:
        return alert.is_active

    @admin.display(description="GPU", ordering="gpu__index")
    def gpu_short(self, alert: Alert) -> str:
        return "–" if alert.gpu is None else f"gpu{alert.gpu.index}"

    def has_clear_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("inventory.change_alert")

    @admin.action(description="Clear selected alerts", permissions=["clear"])
    def clear(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        keys = queryset.filter(cleared_at__isnull=True).values_list("key", flat=True)
        cleared = sum(alerts.clear_alert(key) for key in keys)
        self.message_user(request, f"{cleared} alert(s) cleared.", messages.SUCCESS)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued on the API tokens page (the secret is shown once there); here
    they can be renamed and revoked (deleted). The digest is never shown."""

    list_display = ("name", "user", "prefix_display", "created_at", "last_used_at")
    list_filter = ("user",)
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__username")
    fields = ("name", "user", "prefix_display", "created_at", "last_used_at")
    readonly_fields = ("user", "prefix_display", "created_at", "last_used_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Prefix", ordering="prefix")
    def prefix_display(self, token: ApiToken) -> str:
        return f"{token.prefix}…"


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdmin):
    """Who holds which role (the housekeeper): elected by the agents, never edited here."""

    list_display = ("name", "holder", "acquired_at", "expires_at")
