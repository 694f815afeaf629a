"""The user's API tokens: list, create (the plain token is shown once), revoke."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from inventory.models import ApiToken


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What the token is for, e.g. “prometheus” or “deploy script”.",
    )


@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = TokenForm(request.POST) if request.method == "POST" else TokenForm()
    created: tuple[ApiToken, str] | None = None
    if form.is_valid():
        created = ApiToken.issue(request.user, form.cleaned_data["name"])
        form = TokenForm()
    context = {
        "form": form,
        "created": created[0] if created else None,
        "raw_token": created[1] if created else "",
        "tokens": ApiToken.objects.filter(user=request.user.pk),
    }
    response = render(request, "inventory/tokens.html", context)
    # The one page that shows a plain token must not be kept by any cache.
    add_never_cache_headers(response)
    return response


@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user.pk)
    token.delete()
    messages.success(request, f"Token “{token.name}” revoked; it no longer works.")
    return redirect("inventory:tokens")
