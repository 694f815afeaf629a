"""A deployment's settings are written once (the model field) and the page form, the API
schemas and the actions agree with it."""

from __future__ import annotations

import pytest
from annotated_types import Ge, Le

from scheduling import deployment_fields as fields
from scheduling.api.schemas import DeploymentIn, DeploymentPatch
from scheduling.forms import DeploymentForm
from scheduling.models import Deployment

INTEGERS = [
    "replicas", "min_replicas", "idle_timeout", "cold_start_timeout", "max_queue", "n_ctx",
    "parallel", "cache_ram", "priority",
]  # fmt: skip


def _schema_bounds(schema: type, name: str) -> tuple[int | None, int | None]:
    metadata = schema.model_fields[name].metadata  # type: ignore[attr-defined]
    low = next((m.ge for m in metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in metadata if isinstance(m, Le)), None)
    return low, high


def test_a_change_may_touch_exactly_the_updatable_fields():
    assert set(DeploymentPatch.model_fields) - {"only_gpus", "exclude_gpus"} == fields.UPDATABLE


def test_creating_through_the_api_takes_exactly_the_settable_fields():
    expected = (set(fields.SETTABLE) - {"model"}) | {"model_id", "only_gpus", "exclude_gpus"}
    assert set(DeploymentIn.model_fields) == expected


def test_every_settable_field_is_a_deployment_field():
    names = {field.name for field in Deployment._meta.get_fields()}
    assert set(fields.SETTABLE) <= names


@pytest.mark.parametrize("name", INTEGERS)
def test_the_api_bounds_are_the_model_bounds(name):
    assert _schema_bounds(DeploymentIn, name) == fields.bounds(name)
    if name in DeploymentPatch.model_fields:
        assert _schema_bounds(DeploymentPatch, name) == fields.bounds(name)


@pytest.mark.parametrize("name", INTEGERS)
def test_the_form_bounds_and_defaults_are_the_model_ones(name):
    field = DeploymentForm.base_fields[name]
    assert (field.min_value, field.max_value) == fields.bounds(name)  # type: ignore[attr-defined]
    if name != "min_replicas":  # left empty on the form: the replicas
        assert field.initial == Deployment._meta.get_field(name).get_default()


@pytest.mark.parametrize("name", INTEGERS)
def test_the_api_defaults_are_the_model_defaults(name):
    if name == "min_replicas":  # left out: the replicas
        return
    default = DeploymentIn.model_fields[name].default
    assert default == Deployment._meta.get_field(name).get_default()


def test_the_bounds_ignore_the_databases_integer_range():
    assert fields.bounds("n_ctx") == (256, 10_000_000)
    assert fields.bounds("max_queue") == (0, 100_000)
