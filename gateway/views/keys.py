"""Inference keys: everyone may list them; operators create them (the plain key is shown
once) and revoke them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from core.access import can_operate, require_operator
from gateway.actions import do_issue_key, do_revoke_key
from gateway.models import InferenceKey
from scheduling.models import Deployment


class KeyForm(forms.Form):
    """Parses the input; ``do_issue_key`` checks the rules and its errors land here."""

    name = forms.CharField(
        max_length=100, help_text="Who or what uses it, e.g. “chat frontend” or “eval job”."
    )
    served_names = forms.MultipleChoiceField(
        required=False,
        label="Allowed models",
        help_text="None selected: every model, also those deployed later.",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires",
        help_text="Optional; empty: never.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = Deployment.objects.order_by("served_name").values_list("served_name", flat=True)
        self.fields["served_names"].choices = [(n, n) for n in names]  # type: ignore[attr-defined]

    def add_action_errors(self, error: ValidationError) -> None:
        for field, messages_ in error.message_dict.items():
            self.add_error(field if field in self.fields else None, messages_)


def _issue(request: HttpRequest, form: KeyForm) -> tuple[InferenceKey, str] | None:
    if not form.is_valid():
        return None
    data = form.cleaned_data
    try:
        return do_issue_key(data["name"], request.user, data["served_names"], data["expires_at"])
    except ValidationError as error:
        form.add_action_errors(error)
        return None


@require_http_methods(["GET", "POST"])
def key_list(request: HttpRequest) -> HttpResponse:
    created: tuple[InferenceKey, str] | None = None
    if request.method == "POST":
        require_operator(request.user, "create inference keys")
        form = KeyForm(request.POST)
        created = _issue(request, form)
        if created:
            form = KeyForm()
    else:
        form = KeyForm()
    context = {
        "form": form,
        "can_operate": can_operate(request.user),
        "created": created[0] if created else None,
        "raw_key": created[1] if created else "",
        "keys": InferenceKey.objects.select_related("created_by"),
        "time_zone": timezone.get_current_timezone_name(),
    }
    response = render(request, "gateway/keys.html", context)
    # The one page that shows a plain key must not be kept by any cache.
    add_never_cache_headers(response)
    return response


@require_POST
def key_revoke(request: HttpRequest, key_id: object) -> HttpResponse:
    require_operator(request.user, "revoke inference keys")
    key = get_object_or_404(InferenceKey, pk=key_id)
    if key.revoked_at is not None:
        messages.info(request, f"Key “{key.name}” was already revoked.")
    else:
        do_revoke_key(key)
        messages.success(request, f"Key “{key.name}” revoked; the gateway refuses it now.")
    return redirect("gateway:keys")
