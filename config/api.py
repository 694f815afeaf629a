"""The REST API root (django-ninja): /api/v1/ with its OpenAPI schema and docs.

Every operation needs an API token (``Authorization: Bearer …``) or the logged-in
dashboard session; anonymous calls get a 401 JSON answer, not the login redirect.

Errors always come back as JSON with a ``detail`` string; validation errors (422) add
``errors``, a list of ``{"field": …, "message": …}``, one per offending field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, URLResolver
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from gateway.api import router as gateway_router
from inventory.api import router as inventory_router
from inventory.api_auth import API_AUTH
from models_app.api import router as models_router
from scheduling.api import router as scheduling_router

# Pages for people stay behind the login page; everything else answers in JSON.
_BROWSER_PAGES = {"openapi-view", "api-root"}
_PARAM_SOURCES = {"path", "query", "header", "cookie", "form", "file"}
# Answers stay small whatever the request held (a 1 MB unknown key is not echoed back).
MAX_FIELD = 100
MAX_MESSAGE = 500
MAX_ERRORS = 50
_MESSAGES = {
    "extra_forbidden": "Unknown field.",
    "missing": "This field is required.",
}


class GpufleetAPI(NinjaAPI):
    @property
    def urls(self) -> tuple[list[URLResolver | URLPattern], str, str]:
        """Exempt the JSON views from LoginRequiredMiddleware: they do their own auth."""
        patterns, app_name, namespace = super().urls
        for pattern in patterns:
            if isinstance(pattern, URLPattern) and pattern.name not in _BROWSER_PAGES:
                login_not_required(pattern.callback)
        return patterns, app_name, namespace


api = GpufleetAPI(
    title="gpufleet API",
    version="1",
    description=(
        "Nodes, GPUs, GPU telemetry, memory estimates, the model catalog, downloads, "
        "deployments and their instances, inference keys for the gateway and its usage. "
        "Authenticate with `Authorization: Bearer <token>` (create tokens on the dashboard's "
        "API tokens page) or a logged-in session."
    ),
    urls_namespace="api",
    docs_url="/docs",
    auth=API_AUTH,
)
api.add_router("/", inventory_router)
api.add_router("/", models_router)
api.add_router("/", scheduling_router)
api.add_router("/", gateway_router)


def field_name(loc: Sequence[Any]) -> str:
    """``("body", "payload", "priority")`` → ``priority``; ``("query", "end")`` → ``end``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        return ".".join(parts[2:]) or "body"
    if parts and parts[0] in _PARAM_SOURCES:
        parts = parts[1:]
    return ".".join(parts) or "request"


def error_message(error: dict[str, Any]) -> str:
    message = _MESSAGES.get(error.get("type", ""), str(error.get("msg", "")))
    return message.removeprefix("Value error, ")


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validation_response(
    request: HttpRequest, errors: Iterable[tuple[str, str]], status: int = 422
) -> HttpResponse:
    items = [
        {"field": shorten(field, MAX_FIELD), "message": shorten(message, MAX_MESSAGE)}
        for field, message in list(errors)[:MAX_ERRORS]
    ]
    detail = "; ".join(f"{item['field']}: {item['message']}" for item in items)
    return api.create_response(request, {"detail": detail, "errors": items}, status=status)


@api.exception_handler(NinjaValidationError)
def on_invalid_input(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = [(field_name(e.get("loc", ())), error_message(e)) for e in exc.errors]
    return validation_response(request, errors)


@api.exception_handler(DjangoValidationError)
def on_model_rules(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    by_field = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    errors = [(field, message) for field, messages in by_field.items() for message in messages]
    return validation_response(request, errors)


@api.exception_handler(AuthenticationError)
def on_anonymous(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    detail = "Authentication required: send 'Authorization: Bearer <token>' or log in."
    response = api.create_response(request, {"detail": detail}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="gpufleet"'
    return response


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    detail = str(exc)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # ninja hides the parser's message unless DEBUG; it is the useful part.
        detail = f"Request body is not valid JSON: {exc.__cause__}"
    return api.create_response(request, {"detail": detail}, status=exc.status_code)


@api.exception_handler(PermissionDenied)
def on_forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Forbidden."}, status=403)


@api.exception_handler(RequestDataTooBig)
def on_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    detail = "Request body too large."
    return api.create_response(request, {"detail": detail}, status=413)


@csrf_exempt
@login_not_required
def api_not_found(request: HttpRequest) -> HttpResponse:
    """Every path under /api/ that no operation matches (a malformed id included)."""
    return JsonResponse({"detail": "Not found."}, status=404)
