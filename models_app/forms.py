"""The estimate page's form: it parses input; ``models_app.estimate_service`` judges it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from core.units import GIB
from inventory.models import Gpu
from models_app import estimate_service
from models_app.estimator import CacheType, RunSettings, SplitMode

CACHE_CHOICES = [(c.value, c.value) for c in CacheType]
CONTEXT_CHOICES = (0, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
# Shares far above any real ratio would overflow llama.cpp's float32 sums; free memory as
# much as the API's free_bytes allows (1 PiB).
TENSOR_SPLIT_MAX = 1e30
FREE_GIB_MAX = 1 << 20


class GpuChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Gpu) -> str:
        free = obj.free_for_placement / GIB
        return f"{obj.node.name}/gpu{obj.index} · {obj.name} · {free:.1f} GiB free for placement"


def _number(initial: int, minimum: int, maximum: int, **extra: Any) -> forms.IntegerField:
    return forms.IntegerField(initial=initial, min_value=minimum, max_value=maximum, **extra)


class EstimateForm(forms.Form):
    model = forms.CharField(
        max_length=4096,
        help_text="A .gguf file in a storage root, an https URL, or hf://owner/repo/file.gguf "
        "(hf://owner/repo@revision/file.gguf for another revision). Only the header is read.",
    )
    n_ctx = _number(4096, 0, 1 << 24, label="Context", help_text="tokens, all slots; 0: training")
    n_parallel = _number(1, 1, 1024, label="Parallel slots")
    n_batch = _number(2048, 1, 1 << 20, label="Batch")
    n_ubatch = _number(512, 1, 1 << 20, label="Micro-batch")
    cache_type_k = forms.ChoiceField(
        choices=[(c.value, c.value) for c in CacheType], label="K cache"
    )
    cache_type_v = forms.ChoiceField(
        choices=[(c.value, c.value) for c in CacheType], label="V cache"
    )
    flash_attn = forms.BooleanField(required=False, label="Flash attention")
    n_gpu_layers = _number(-1, -1, 100_000, label="GPU layers", help_text="-1: all")
    tensor_split = forms.CharField(
        required=False, label="Tensor split", help_text="e.g. 3,1 (empty: by free memory)"
    )
    mmap = forms.BooleanField(required=False, initial=True, label="mmap")
    gpus = GpuChoiceField(
        queryset=Gpu.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="GPUs of one node",
    )
    extra_gpus = forms.CharField(
        required=False,
        label="Other GPUs",
        help_text="free GiB of GPUs not in the inventory, e.g. 24, 24",
    )
    margin_mib = _number(0, 0, 1 << 30, label="Margin (MiB)", help_text="kept free per GPU")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        usable = Gpu.objects.select_related("node").filter(enabled=True, present=True)
        self.fields["gpus"].queryset = usable  # type: ignore[attr-defined]

    def clean_tensor_split(self) -> tuple[float, ...] | None:
        text = self.cleaned_data["tensor_split"]
        return _numbers(text, "tensor split", allow_zero=True, maximum=TENSOR_SPLIT_MAX)

    def clean_extra_gpus(self) -> tuple[float, ...]:
        text = self.cleaned_data["extra_gpus"]
        return _numbers(text, "free GiB", allow_zero=False, maximum=FREE_GIB_MAX) or ()

    def run_settings(self) -> RunSettings:
        data = self.cleaned_data
        return estimate_service.build_settings(
            n_ctx=data["n_ctx"],
            n_seq_max=data["n_parallel"],
            n_batch=data["n_batch"],
            n_ubatch=data["n_ubatch"],
            type_k=CacheType(data["cache_type_k"]),
            type_v=CacheType(data["cache_type_v"]),
            flash_attn=data["flash_attn"],
            n_gpu_layers=data["n_gpu_layers"],
            split_mode=SplitMode.LAYER,
            tensor_split=data["tensor_split"],
            use_mmap=data["mmap"],
        )

    def targets(self) -> list[estimate_service.Target]:
        inventory = estimate_service.inventory_targets(list(self.cleaned_data["gpus"]))
        sizes = [int(Decimal(str(value)) * GIB) for value in self.cleaned_data["extra_gpus"]]
        return inventory + estimate_service.hypothetical_targets(sizes, first=len(inventory))


def _numbers(text: str, what: str, allow_zero: bool, maximum: float) -> tuple[float, ...] | None:
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not parts:
        return None
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise forms.ValidationError(f"Give numbers separated by commas ({what}).") from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise forms.ValidationError(f"Give finite numbers ({what}).")
    if any(v < 0 or (v == 0 and not allow_zero) for v in values):
        low = "zero or more" if allow_zero else "more than zero"
        raise forms.ValidationError(f"Each {what} must be {low}.")
    if any(v > maximum for v in values):
        shown = f"{maximum:,.0f}" if maximum < 1e15 else f"{maximum:g}"
        raise forms.ValidationError(f"Each {what} must be at most {shown}.")
    return values
