"""Forms of the deployment pages. They only parse input (labels and options typed as
text, GPUs picked by id); every rule is checked by the model and by
``actions.do_create_deployment``, whose errors the views put back on these fields."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from inventory.models import Gpu
from models_app.models import CatalogModel
from scheduling.choices import (
    Backend,
    CacheType,
    ModelKind,
    PlacementPolicy,
    Pooling,
)
from scheduling.deployment_fields import SETTABLE, default, form_limits
from scheduling.models import Deployment
from scheduling.options import ALLOWED_BY_BACKEND


def gpu_label(gpu: Gpu) -> str:
    """``node-a/gpu0 NVIDIA A100-SXM4-80GB``."""
    return f"{gpu.node.name}/gpu{gpu.index} {gpu.name}"


def parse_labels(text: str) -> dict[str, str]:
    """``"zone=a, tier=gold"`` → ``{"zone": "a", "tier": "gold"}``."""
    labels: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"“{item}” is not key=value.")
        labels[key.strip()] = value.strip()
    return labels


def parse_options(text: str) -> dict[str, str]:
    """One ``name=value`` per line; blank lines and lines starting with # are skipped."""
    options: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"Line {number} (“{line}”) is not name=value.")
        options[name.strip()] = value.strip()
    return options


def labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in labels.items())


def options_text(options: dict[str, Any]) -> str:
    return "\n".join(f"{name}={value}" for name, value in options.items())


class GpuChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return gpu_label(obj)


def _gpu_field(label: str, help_text: str) -> GpuChoiceField:
    return GpuChoiceField(
        queryset=Gpu.objects.select_related("node").order_by("node__name", "index"),
        required=False,
        label=label,
        help_text=help_text,
        widget=forms.SelectMultiple(attrs={"size": 4}),
    )


def _help(name: str) -> str:
    return str(getattr(Deployment._meta.get_field(name), "help_text", ""))


# Left empty (a client that does not send them): the model's default.
DEFAULTED = ("idle_timeout", "cold_start_timeout", "max_queue", "cache_ram")
DEFAULTED_CHOICES = ("backend", "kind")


def options_by_backend() -> list[dict[str, Any]]:
    """The extra options each backend takes, for the form's help."""
    return [
        {"backend": value, "label": label, "names": sorted(ALLOWED_BY_BACKEND.get(value, {}))}
        for value, label in Backend.choices
    ]


class DeploymentForm(forms.Form):
    model = forms.ModelChoiceField(
        queryset=CatalogModel.objects.order_by("display_name"), empty_label="— pick a model —"
    )
    served_name = forms.CharField(
        max_length=128,
        help_text="The name clients ask the gateway for.",
        widget=forms.TextInput(attrs={"spellcheck": "false", "autocomplete": "off"}),
    )
    replicas = forms.IntegerField(
        **form_limits("replicas"), initial=default("replicas"), help_text="The most it runs."
    )
    min_replicas = forms.IntegerField(
        label="Always running",
        **form_limits("min_replicas"),
        required=False,
        help_text="Kept up without traffic; 0 scales to zero (the first request starts one). "
        "Empty: all replicas.",
    )
    idle_timeout = forms.IntegerField(
        label="Release after idle (s)", **form_limits("idle_timeout"),
        initial=default("idle_timeout"), required=False,
        help_text="Instances above the minimum stop after this long without requests.",
    )  # fmt: skip
    cold_start_timeout = forms.IntegerField(
        label="Cold start timeout (s)", **form_limits("cold_start_timeout"),
        initial=default("cold_start_timeout"), required=False,
        help_text="How long a request waits for an instance to start.",
    )  # fmt: skip
    max_queue = forms.IntegerField(
        label="Waiting requests", **form_limits("max_queue"), initial=default("max_queue"),
        required=False,
        help_text="Requests that may wait for a start; more get 429.",
    )  # fmt: skip
    backend = forms.ChoiceField(
        choices=Backend.choices, initial=Backend.LLAMA_SERVER, required=False,
        help_text=_help("backend"),
    )  # fmt: skip
    kind = forms.ChoiceField(
        label="Serves", choices=[("", "What the model is for (from its file)"), *ModelKind.choices],
        initial="", required=False,
        help_text="Chat / completion, embeddings (/v1/embeddings) or reranking (/v1/rerank); "
        "by default rank pooling makes a reranker, an encoder or pooling an embedding model.",
    )  # fmt: skip
    pooling = forms.ChoiceField(
        choices=Pooling.choices, initial=Pooling.MODEL, required=False,
        help_text="Embeddings and rerankers only; reranking pools with rank.",
    )  # fmt: skip
    n_ctx = forms.IntegerField(
        label="Context (tokens)",
        **form_limits("n_ctx"),
        initial=default("n_ctx"),
        help_text=_help("n_ctx"),
    )
    parallel = forms.IntegerField(
        label="Parallel slots", **form_limits("parallel"), initial=default("parallel"),
        help_text="Requests one backend serves at once, each with the full context "
        "(llama-server; llama-cpp-python serves 1).",
    )  # fmt: skip
    cache_ram = forms.IntegerField(
        label="Prompt cache (MiB)", **form_limits("cache_ram"), initial=default("cache_ram"),
        required=False, help_text="Host RAM llama-server keeps prompts in (0: none).",
    )  # fmt: skip
    cache_type = forms.ChoiceField(
        label="K/V cache type", choices=CacheType.choices, initial=CacheType.F16
    )
    flash_attn = forms.BooleanField(label="Flash attention", required=False)
    policy = forms.ChoiceField(choices=PlacementPolicy.choices, initial=PlacementPolicy.BINPACK)
    node_labels = forms.CharField(
        required=False,
        label="Node labels",
        help_text="key=value, key=value: a node must have every one.",
        widget=forms.TextInput(attrs={"placeholder": "zone=a, tier=gold", "spellcheck": "false"}),
    )
    only_gpus = _gpu_field("Only these GPUs", "Empty: any GPU.")
    exclude_gpus = _gpu_field("Never these GPUs", "")
    priority = forms.IntegerField(
        **form_limits("priority"),
        initial=default("priority"),
        help_text="0–100; higher is placed first.",
    )
    allow_cpu_offload = forms.BooleanField(
        label="Allow CPU offload", required=False, help_text="Layers that do not fit go to RAM."
    )
    allow_multi_gpu = forms.BooleanField(
        label="Allow several GPUs", required=False, help_text="Split one replica over GPUs."
    )
    extra_options = forms.CharField(
        required=False,
        label="Extra server options",
        help_text="One name=value per line; the options each backend takes are listed below.",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
    )

    @property
    def options_help(self) -> list[dict[str, Any]]:
        """Each backend's allowed options (the page shows the chosen backend's list:
        ``data-for-backend`` in static/gpufleet/forms.js)."""
        return options_by_backend()

    def clean_node_labels(self) -> dict[str, str]:
        return parse_labels(self.cleaned_data.get("node_labels") or "")

    def clean_extra_options(self) -> dict[str, str]:
        return parse_options(self.cleaned_data.get("extra_options") or "")

    def deployment_fields(self) -> dict[str, Any]:
        """The cleaned values as ``Deployment`` fields (those that parsed); no minimum
        given means every replica runs (always on)."""
        fields = {n: self.cleaned_data[n] for n in SETTABLE if n in self.cleaned_data}
        for name in DEFAULTED:
            if fields.get(name) is None:
                fields.pop(name, None)  # left empty: the model's default
        for name in DEFAULTED_CHOICES:
            if not fields.get(name):
                fields.pop(name, None)
        if fields.get("min_replicas") is None:
            fields["min_replicas"] = fields.get("replicas", 1)
        return fields

    def gpu_selection(self) -> tuple[list[Gpu], list[Gpu]]:
        data = self.cleaned_data
        return list(data.get("only_gpus") or []), list(data.get("exclude_gpus") or [])

    def add_model_errors(self, error: ValidationError) -> None:
        """Errors of the model or the action, each on its field (else on the form)."""
        for field, messages in error.message_dict.items():
            self.add_error(field if field in self.fields else None, messages)


def joined(errors: Iterable[Any]) -> str:
    """Form or validation error messages as one line."""
    return " ".join(str(e) for e in errors)


class ScaleForm(forms.Form):
    replicas = forms.IntegerField(**form_limits("replicas"))
