"""Forms of the inventory pages. Rules live in the models: these forms only parse input
and hand it to the model's validation (``do_update_gpu_settings`` / ``full_clean``)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils import timezone

from core.units import GIB, MIB
from inventory.choices import PRIORITY_MAX, PRIORITY_MIN, AlertKind
from inventory.models import Gpu, MaintenanceWindow, Node

UNITS = {"MiB": MIB, "GiB": GIB}
# Model field name → form field name, for errors raised by the model's validation.
GPU_FIELD_FOR = {"priority": "priority", "enabled": "enabled", "reserved_override": "reserved"}


def reserved_initial(reserved_override: int | None) -> tuple[Decimal | None, str]:
    """Show a stored byte count in GiB when it is whole GiB, else in MiB."""
    if reserved_override is None:
        return None, "GiB"
    if reserved_override % GIB == 0:
        return Decimal(reserved_override // GIB), "GiB"
    mib = (Decimal(reserved_override) / MIB).quantize(Decimal("0.001"))
    return (mib.to_integral() if mib == mib.to_integral() else mib.normalize()), "MiB"


class GpuSettingsForm(forms.Form):
    priority = forms.IntegerField(
        min_value=PRIORITY_MIN,
        max_value=PRIORITY_MAX,
        help_text=f"{PRIORITY_MIN}–{PRIORITY_MAX}; higher comes first in device order.",
    )
    enabled = forms.BooleanField(required=False, help_text="A disabled GPU gets no new work.")
    reserved = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_digits=12,
        decimal_places=3,
        label="Reserved memory",
        help_text="Kept free for the driver and other programs. Empty: the global default.",
        widget=forms.NumberInput(attrs={"step": "any", "placeholder": "default"}),
    )
    reserved_unit = forms.ChoiceField(choices=[(u, u) for u in UNITS], initial="GiB", label="Unit")

    stored_reserved: int | None = None

    @classmethod
    def for_gpu(cls, gpu: Gpu, data: Any = None) -> GpuSettingsForm:
        amount, unit = reserved_initial(gpu.reserved_override)
        initial = {
            "priority": gpu.priority,
            "enabled": gpu.enabled,
            "reserved": amount,
            "reserved_unit": unit,
        }
        form = cls(data=data, initial=initial)
        form.stored_reserved = gpu.reserved_override
        return form

    def changes(self) -> dict[str, Any]:
        """The cleaned values as the model's fields (reserved memory in bytes)."""
        data = self.cleaned_data
        amount: Decimal | None = data["reserved"]
        reserved = None
        if not {"reserved", "reserved_unit"} & set(self.changed_data):
            reserved = self.stored_reserved  # shown rounded; saving it back changes nothing
        elif amount is not None:
            scaled = amount * UNITS[data["reserved_unit"]]
            reserved = int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        return {
            "priority": data["priority"],
            "enabled": data["enabled"],
            "reserved_override": reserved,
        }

    def add_model_errors(self, error: ValidationError) -> None:
        """Put the model's errors (named after model fields) next to the form's fields."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, messages in error.message_dict.items():
            field = GPU_FIELD_FOR.get(name)
            if field is None and name != NON_FIELD_ERRORS:
                messages = [f"{name}: {message}" for message in messages]
            self.add_error(field, messages)


class MaintenanceWindowForm(forms.ModelForm):
    """A window for one node; the node and author are set on the instance by the view,
    and the model's ``clean()`` rejects a window that ends before it starts."""

    class Meta:
        model = MaintenanceWindow
        fields = ["starts_at", "ends_at", "message"]
        widgets = {
            "starts_at": forms.DateTimeInput(
                attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"
            ),
            "ends_at": forms.DateTimeInput(
                attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"
            ),
            "message": forms.TextInput(
                attrs={"placeholder": "e.g. Driver upgrade, expect reboots"}
            ),
        }
        labels = {"starts_at": "Starts", "ends_at": "Ends"}

    def clean_ends_at(self) -> Any:
        ends_at = self.cleaned_data["ends_at"]
        if ends_at is not None and ends_at <= timezone.now():
            raise ValidationError("This time has already passed.")
        return ends_at


class AlertFilterForm(forms.Form):
    kind = forms.ChoiceField(choices=[("", "All kinds"), *AlertKind.choices], required=False)
    node = forms.ModelChoiceField(
        queryset=Node.objects.order_by("name"),
        to_field_name="name",
        required=False,
        empty_label="All nodes",
    )

    def filters(self) -> dict[str, Any]:
        """Query filters for the valid fields; an invalid value filters nothing."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        found: dict[str, Any] = {}
        if data.get("kind"):
            found["kind"] = data["kind"]
        if data.get("node") is not None:
            found["node"] = data["node"]
        return found
