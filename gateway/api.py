"""``/api/v1/inference-keys`` (list; create and revoke for operators) and ``/api/v1/usage``
(totals per served name and per key over a window). Keys are for ``/v1``, not for this
API: a ``gfk_`` key is refused here like any unknown bearer token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import ConfigDict, Strict, field_validator

from core.access import require_operator
from core.requests import ApiRequest
from gateway import actions
from gateway.charts import DEFAULT_WINDOW, WindowName, usage_report, usage_rows, window_start
from gateway.models import InferenceKey
from models_app.api.schemas import ErrorOut

router = Router(tags=["inference keys"])
ERRORS: dict[int | str, Any] = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut}

StrictText = Annotated[str, Strict()]


# --- schemas -----------------------------------------------------------------------------


class InferenceKeyOut(Schema):
    id: UUID
    name: str
    prefix: str = Field(description="the key's first characters, to recognise it")
    served_names: list[str] = Field(description="models it may call; empty: every model")
    status: Literal["active", "revoked", "expired"]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by: str | None = Field(description="username")
    created_at: datetime
    last_used_at: datetime | None


class InferenceKeyCreatedOut(InferenceKeyOut):
    key: str = Field(description="the plain key (gfk_…): shown only in this answer, never again")


class InferenceKeyIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: StrictText = Field(max_length=100, description="who or what uses it")
    served_names: list[StrictText] = Field(
        default_factory=list, description="served names of existing deployments; empty: all"
    )
    expires_at: datetime | None = Field(
        None, description="ISO 8601, in the future; null: never. Naive = UTC."
    )

    @field_validator("expires_at", mode="before")
    @classmethod
    def iso_text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("Use an ISO 8601 date and time, e.g. 2030-01-31T12:00:00Z.")
        return value


class UsageQuery(Schema):
    window: WindowName = Field(DEFAULT_WINDOW, description="the last hour, 24 hours or 7 days")
    served_name: str | None = Field(None, description="only this served name")
    key_id: UUID | None = Field(None, description="only this inference key")


class UsageTotalsOut(Schema):
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    mean_ttft_ms: float | None = Field(description="mean time to first token; null: none")
    mean_queue_ms: float | None = Field(description="mean wait for an instance per request")
    cold_starts: int


class ServedNameUsageOut(UsageTotalsOut):
    served_name: str


class KeyUsageOut(UsageTotalsOut):
    key_id: UUID | None = Field(description="null: the key was deleted")
    name: str
    prefix: str


class UsageOut(Schema):
    window: WindowName
    start: datetime = Field(description="the first minute counted")
    end: datetime
    totals: UsageTotalsOut
    served_names: list[ServedNameUsageOut] = Field(description="busiest first")
    keys: list[KeyUsageOut] = Field(description="busiest first")


# --- keys --------------------------------------------------------------------------------


def get_key(key_id: UUID) -> InferenceKey:
    key = InferenceKey.objects.select_related("created_by").filter(pk=key_id).first()
    if key is None:
        raise HttpError(404, f"Inference key {key_id} not found.")
    return key


def key_data(key: InferenceKey) -> dict[str, Any]:
    """What the API shows of a key: never its digest."""
    fields = ("id", "name", "prefix", "served_names", "status", "expires_at", "revoked_at")
    data = {field: getattr(key, field) for field in fields}
    data["created_by"] = key.created_by.get_username() if key.created_by else None
    return data | {"created_at": key.created_at, "last_used_at": key.last_used_at}


def _aware(value: datetime | None) -> datetime | None:
    if value is None or timezone.is_aware(value):
        return value
    return value.replace(tzinfo=UTC)


@router.get(
    "/inference-keys",
    response={200: list[InferenceKeyOut], **ERRORS},
    summary="Inference keys for the gateway (/v1); never the key itself",
)
def list_keys(request: ApiRequest) -> list[dict[str, Any]]:
    return [key_data(key) for key in InferenceKey.objects.select_related("created_by")]


@router.post(
    "/inference-keys",
    response={201: InferenceKeyCreatedOut, 422: Any, **ERRORS},
    summary="Create an inference key (operators); the answer holds the plain key, once",
    description="gpufleet keeps only the key's hash: copy `key` from this answer. "
    "A served name no deployment uses, or an expiry in the past: 422 with the field named.",
)
def create_key(request: ApiRequest, payload: InferenceKeyIn) -> Any:
    require_operator(request.auth, "create inference keys")
    key, raw = actions.do_issue_key(
        payload.name,
        request.auth,
        payload.served_names,
        _aware(payload.expires_at),
    )
    return Status(201, key_data(key) | {"key": raw})


@router.delete(
    "/inference-keys/{uuid:key_id}",
    response={200: InferenceKeyOut, **ERRORS},
    summary="Revoke an inference key (operators); the gateway refuses it from now on",
    description="The key stays listed as revoked. Revoking it again changes nothing.",
)
def revoke_key(request: ApiRequest, key_id: UUID) -> dict[str, Any]:
    require_operator(request.auth, "revoke inference keys")
    return key_data(actions.do_revoke_key(get_key(key_id)))


# --- usage -------------------------------------------------------------------------------


@router.get(
    "/usage",
    response={200: UsageOut, 422: Any, **ERRORS},
    tags=["usage"],
    summary="Gateway usage per served name and per key over the last hour, day or week",
)
def usage(request: ApiRequest, query: Query[UsageQuery]) -> dict[str, Any]:
    if query.key_id is not None:
        get_key(query.key_id)
    now = timezone.now()
    start = window_start(query.window, now)
    rows = usage_rows(start, query.served_name, query.key_id)
    return {"window": query.window, "start": start, "end": now, **usage_report(rows)}
