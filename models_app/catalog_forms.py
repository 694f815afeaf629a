"""Forms of the catalog pages: add a model, download one to a node. They parse input;
``models_app.catalog`` and ``models_app.actions`` judge it."""

from __future__ import annotations

from django import forms

from inventory.models import Node


class AddModelForm(forms.Form):
    source = forms.ChoiceField(
        choices=[("hf", "Hugging Face hub"), ("url", "URL")], initial="hf", widget=forms.RadioSelect
    )
    hf_repo = forms.CharField(
        label="Repository",
        max_length=200,
        required=False,
        help_text="e.g. Qwen/Qwen2-0.5B-Instruct-GGUF",
    )
    revision = forms.CharField(max_length=200, required=False, initial="main")
    hf_file = forms.CharField(label="File", max_length=500, required=False)
    url = forms.URLField(label="URL", max_length=2000, required=False, assume_scheme="https")
    sha256 = forms.RegexField(
        regex=r"^[0-9a-fA-F]{64}$",
        required=False,
        label="sha256",
        help_text="optional for a URL: checked before the file is ready",
    )
    display_name = forms.CharField(max_length=200, required=False, help_text="optional")

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if data.get("source") == "hf":
            for name in ("hf_repo", "hf_file"):
                if not data.get(name):
                    self.add_error(name, "This field is required.")
        elif data.get("source") == "url" and not data.get("url"):
            self.add_error("url", "This field is required.")
        return data


class NodeChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Node) -> str:
        free = sum(obj.disk_free.values()) / 1024**3
        return f"{obj.name} ({obj.status}, {free:.0f} GiB free)"


class DownloadForm(forms.Form):
    node = NodeChoiceField(queryset=Node.objects.order_by("name"), empty_label=None)
    download_path = forms.CharField(
        label="Directory",
        max_length=4096,
        required=False,
        help_text="inside a storage root of the node; empty: <root>/<owner>__<repo>",
    )
