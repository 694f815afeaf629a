"""A deployment's settings as one source: which fields a person sets, which a change may
touch, and each field's default and bounds, read from ``Deployment``'s own fields and
validators. The page form (``forms``), the API schemas (``api.schemas``), the actions and
the model all take them from here, so a bound is written once: on the model field."""

from __future__ import annotations

from typing import Any, TypedDict

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Field
from django.db.models.fields import PositiveIntegerRelDbTypeMixin

from scheduling.models import Deployment

# Set when a deployment is created (the page form and ``POST /deployments``), besides its
# GPU pins (``only_gpus`` / ``exclude_gpus``, many-to-many).
SETTABLE = (
    "model", "served_name", "replicas", "min_replicas", "idle_timeout", "cold_start_timeout",
    "max_queue", "backend", "kind", "pooling", "n_ctx", "parallel", "cache_ram",
    "cache_type", "flash_attn", "policy", "node_labels", "priority", "allow_cpu_offload",
    "allow_multi_gpu", "extra_options",
)  # fmt: skip
# What a change may touch (``PATCH``; replicas go through scaling, the name and the model
# never change): running instances keep their settings until restarted.
UPDATABLE = frozenset(SETTABLE) - {"model", "served_name", "replicas", "min_replicas"}


class FormLimits(TypedDict, total=False):
    min_value: int
    max_value: int


def default(name: str) -> Any:
    """The model field's default."""
    return Deployment._meta.get_field(name).get_default()  # type: ignore[union-attr]


def bounds(name: str) -> tuple[int | None, int | None]:
    """``(least, most)`` an integer field allows (``None``: no bound), from its validators
    and, for positive fields without a lower validator, 0."""
    field = Deployment._meta.get_field(name)
    assert isinstance(field, Field), name
    # the validators the field declares, as its migration would write them
    # (``field.validators`` adds the database's integer range, which differs by backend)
    validators = field.deconstruct()[3].get("validators", [])
    least = [v.limit_value for v in validators if isinstance(v, MinValueValidator)]
    most = [v.limit_value for v in validators if isinstance(v, MaxValueValidator)]
    positive = isinstance(field, PositiveIntegerRelDbTypeMixin)
    low = max(least) if least else (0 if positive else None)
    return low, (min(most) if most else None)


def least(name: str) -> int | None:
    """The lower bound (pydantic's ``ge``)."""
    return bounds(name)[0]


def most(name: str) -> int | None:
    """The upper bound (pydantic's ``le``)."""
    return bounds(name)[1]


def form_limits(name: str) -> FormLimits:
    """``min_value`` / ``max_value`` for a form's ``IntegerField``."""
    low, high = bounds(name)
    limits = FormLimits()
    if low is not None:
        limits["min_value"] = low
    if high is not None:
        limits["max_value"] = high
    return limits
