"""Django admin for scheduling: every model listed and shown, nothing edited by hand,
start / stop / delete through the actions."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from scheduling import models
from scheduling.choices import DesiredState, InstanceState
from scheduling.models import Deployment, Eviction, GpuClaim, Instance, InstanceRun

pytestmark = pytest.mark.django_db
MODELS = [Deployment, Instance, GpuClaim, InstanceRun, Eviction]


@pytest.fixture
def placed(fleet, model_7b, queued, django_capture_on_commit_callbacks):
    from scheduling import actions

    with django_capture_on_commit_callbacks(execute=True):
        deployment = actions.do_create_deployment(model=model_7b, served_name="seven")
    instance = deployment.instances.get()
    InstanceRun.objects.create(instance=instance, number=1, log_path="/tmp/x.log")
    Eviction.objects.create(
        evicted=deployment, for_deployment=deployment, text="stopped seven (…) to start seven"
    )
    return deployment


def test_every_scheduling_model_is_in_the_admin():
    for model in MODELS:
        assert admin.site.is_registered(model), model
    assert {m.__name__ for m in MODELS} >= {
        name for name in dir(models) if isinstance(getattr(models, name), type)
        and issubclass(getattr(models, name), models.models.Model)
        and getattr(models, name).__module__ == "scheduling.models"
    }  # fmt: skip


@pytest.mark.parametrize("model", MODELS)
def test_lists_and_pages_open_and_nothing_is_added_or_edited_by_hand(admin_client, placed, model):
    name = model._meta.model_name
    listing = admin_client.get(reverse(f"admin:scheduling_{name}_changelist"))
    assert listing.status_code == 200 and listing.context["cl"].result_count >= 1
    row = model.objects.first()
    page = admin_client.get(reverse(f"admin:scheduling_{name}_change", args=[row.pk]))
    assert page.status_code == 200 and not page.context["has_change_permission"]
    assert admin_client.get(reverse(f"admin:scheduling_{name}_add")).status_code == 403


def test_the_stop_action_goes_through_the_actions(admin_client, placed):
    url = reverse("admin:scheduling_deployment_changelist")
    body = {"action": "stop", "_selected_action": [str(placed.pk)]}
    assert admin_client.post(url, body).status_code == 302
    placed.refresh_from_db()
    assert placed.desired_state == DesiredState.STOPPED
    assert set(placed.instances.values_list("state", flat=True)) == {InstanceState.STOPPED}
    assert not GpuClaim.objects.exists()


def test_the_lists_show_kind_backend_and_slots_busy(admin_client, placed):
    Deployment.objects.filter(pk=placed.pk).update(kind="embedding", pooling="mean")
    instance = placed.instances.get()
    readings = {"slots": 4, "busy": 3, "tokens_per_second": 1.0, "kv_used": 0.1}
    Instance.objects.filter(pk=instance.pk).update(
        state=InstanceState.RUNNING, backend="llama_server", readings=readings
    )
    page = admin_client.get(reverse("admin:scheduling_deployment_changelist")).content.decode()
    assert "Embedding" in page and "llama.cpp llama-server" in page
    page = admin_client.get(reverse("admin:scheduling_instance_changelist")).content.decode()
    assert "3/4" in page
    detail = reverse("admin:scheduling_instance_change", args=[instance.pk])
    assert "tokens_per_second" in admin_client.get(detail).content.decode()
