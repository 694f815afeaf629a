"""Django admin for every inventory model, respecting the models' rules."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils import timezone

from core.models import LiveEvent
from core.units import GIB
from inventory import models
from inventory.choices import NodeStatus, Resolution
from inventory.models import Alert, ApiToken, Gpu, GpuSample, MaintenanceWindow, Node
from tests.factories import AlertFactory, MaintenanceWindowFactory


@pytest.fixture
def fleet(gpu, admin_user):
    GpuSample.objects.create(
        gpu=gpu, ts=timezone.now(), resolution=Resolution.RAW, utilization=5, memory_used=GIB
    )
    MaintenanceWindowFactory(node=gpu.node)
    AlertFactory(node=gpu.node, gpu=gpu)
    token, _ = ApiToken.issue(admin_user, "ci")
    LiveEvent.objects.create(payload={"kind": "node.status", "id": "x"})
    return {"gpu": gpu, "token": token}


def _admin_url(model, view: str, *args) -> str:
    meta = model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{view}", args=args)


def _changelist(model) -> str:
    return _admin_url(model, "changelist")


def _change(obj) -> str:
    return _admin_url(type(obj), "change", obj.pk)


def test_every_inventory_model_is_in_the_admin():
    for name in models.__all__:
        assert admin.site.is_registered(getattr(models, name)), name


@pytest.mark.parametrize(
    "model", [Node, Gpu, GpuSample, MaintenanceWindow, Alert, ApiToken, LiveEvent]
)
def test_change_lists_open_with_data(admin_client, fleet, model):
    response = admin_client.get(_changelist(model))
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


@pytest.mark.parametrize(
    "model", [Node, Gpu, GpuSample, MaintenanceWindow, Alert, ApiToken, LiveEvent]
)
def test_change_pages_open(admin_client, fleet, model):
    obj = model.objects.first()
    assert admin_client.get(_change(obj)).status_code == 200


def test_gpus_can_be_searched_by_uuid(admin_client, gpus):
    response = admin_client.get(_changelist(Gpu), {"q": gpus[1].uuid})
    assert list(response.context["cl"].result_list) == [gpus[1]]


def test_alerts_can_be_filtered_to_active_ones(admin_client, node):
    AlertFactory(message="active one")
    cleared = AlertFactory(message="cleared one")
    Alert.objects.filter(pk=cleared.pk).update(cleared_at=timezone.now())
    response = admin_client.get(_changelist(Alert), {"status": "active"})
    assert [a.message for a in response.context["cl"].result_list] == ["active one"]


def _gpu_post(gpu: Gpu, **overrides) -> dict[str, str]:
    data = {"priority": str(gpu.priority), "enabled": "on", "reserved_override": ""}
    data.update(overrides)
    return data


def test_gpu_change_in_admin_rejects_reserved_memory_above_the_total(admin_client, gpu):
    response = admin_client.post(_change(gpu), _gpu_post(gpu, reserved_override=str(81 * GIB)))
    assert response.status_code == 200
    assert "Reserved memory must be below the GPU" in response.content.decode()
    gpu.refresh_from_db()
    assert gpu.reserved_override is None


def test_gpu_change_in_admin_rejects_priority_out_of_range(admin_client, gpu):
    response = admin_client.post(_change(gpu), _gpu_post(gpu, priority="101"))
    assert response.status_code == 200
    gpu.refresh_from_db()
    assert gpu.priority == 50


def test_gpu_change_in_admin_saves_through_the_action(
    admin_client, gpu, django_capture_on_commit_callbacks, sent_events
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            _change(gpu), _gpu_post(gpu, priority="90", reserved_override=str(2 * GIB))
        )
    assert response.status_code == 302
    gpu.refresh_from_db()
    assert (gpu.priority, gpu.reserved_override) == (90, 2 * GIB)
    assert [e["kind"] for e in sent_events] == ["gpu.settings"]


def test_gpu_hardware_facts_are_read_only_in_admin(admin_client, gpu):
    admin_client.post(_change(gpu), _gpu_post(gpu, name="Fake GPU", memory_total=str(GIB)))
    gpu.refresh_from_db()
    assert gpu.name == "NVIDIA A100-SXM4-80GB" and gpu.memory_total == 80 * GIB


def test_gpus_are_not_added_in_admin(admin_client, db):
    assert admin_client.get(reverse("admin:inventory_gpu_add")).status_code == 403


@pytest.mark.parametrize("model", [GpuSample, LiveEvent, Alert])
def test_system_written_rows_are_read_only(admin_client, fleet, model):
    obj = model.objects.first()
    assert admin_client.get(_admin_url(model, "add")).status_code == 403
    assert admin_client.post(_change(obj), {}).status_code == 403
    assert (
        admin_client.post(_admin_url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    )
    assert model.objects.filter(pk=obj.pk).exists()


def test_api_token_admin_shows_the_prefix_and_never_the_digest(admin_client, fleet):
    token = fleet["token"]
    for url in (_changelist(ApiToken), _change(token)):
        html = admin_client.get(url).content.decode()
        assert token.prefix in html
        assert token.digest not in html


def test_api_token_digest_cannot_be_changed_in_admin(admin_client, fleet):
    token = fleet["token"]
    admin_client.post(_change(token), {"name": "renamed", "digest": "0" * 64})
    token.refresh_from_db()
    assert token.name == "renamed" and token.digest != "0" * 64


def test_maintenance_window_in_admin_must_end_after_it_starts(admin_client, node):
    start = timezone.localtime() + timedelta(days=1)
    end = start - timedelta(hours=1)  # its own date: shortly after midnight it is the day before
    data = {
        "node": str(node.pk),
        "starts_at_0": start.strftime("%Y-%m-%d"),
        "starts_at_1": start.strftime("%H:%M:%S"),
        "ends_at_0": end.strftime("%Y-%m-%d"),
        "ends_at_1": end.strftime("%H:%M:%S"),
        "message": "oops",
    }
    response = admin_client.post(reverse("admin:inventory_maintenancewindow_add"), data)
    assert response.status_code == 200
    assert "The window must end after it starts." in response.content.decode()
    assert not MaintenanceWindow.objects.exists()


def test_maintenance_window_added_in_admin_records_its_author_and_is_announced(
    admin_client, admin_user, node, django_capture_on_commit_callbacks, sent_events
):
    start = timezone.localtime() + timedelta(days=1)
    end = start + timedelta(hours=1)
    data = {
        "node": str(node.pk),
        "starts_at_0": start.strftime("%Y-%m-%d"),
        "starts_at_1": start.strftime("%H:%M:%S"),
        "ends_at_0": end.strftime("%Y-%m-%d"),
        "ends_at_1": end.strftime("%H:%M:%S"),
        "message": "BIOS update",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:inventory_maintenancewindow_add"), data)
    assert response.status_code == 302
    assert MaintenanceWindow.objects.get().created_by == admin_user
    assert "maintenance.changed" in [e["kind"] for e in sent_events]


def test_drain_action_drains_online_nodes(admin_client, node):
    admin_client.post(_changelist(Node), {"action": "drain", "_selected_action": [str(node.pk)]})
    node.refresh_from_db()
    assert node.status == NodeStatus.DRAINING


def test_clear_action_clears_active_alerts(admin_client, node):
    alert = AlertFactory(node=node)
    admin_client.post(_changelist(Alert), {"action": "clear", "_selected_action": [str(alert.pk)]})
    alert.refresh_from_db()
    assert alert.cleared_at is not None


def test_operator_without_staff_status_cannot_open_the_admin(operator_client, db):
    response = operator_client.get(reverse("admin:index"))
    assert response.status_code == 302 and "login" in response.url


def _node_post(node: Node, **overrides) -> dict[str, str]:
    data = {
        "labels": json.dumps(node.labels),
        "gpus-TOTAL_FORMS": "0",
        "gpus-INITIAL_FORMS": "0",
        "gpus-MIN_NUM_FORMS": "0",
        "gpus-MAX_NUM_FORMS": "1000",
    }
    data.update(overrides)
    return data


def test_node_facts_reported_by_the_agent_are_read_only_in_admin(admin_client, node):
    node.disk_free = {"/models": 10 * GIB}
    node.save()
    before = (node.name, node.address, node.cpu_count)
    response = admin_client.post(
        _change(node),
        _node_post(
            node,
            name="renamed",
            address="10.9.9.9",
            storage_roots='["/elsewhere"]',
            cpu_count="999",
            labels='{"zone": "a"}',
        ),
    )
    assert response.status_code == 302
    node.refresh_from_db()
    assert (node.name, node.address, node.cpu_count) == before
    assert node.storage_roots == ["/models"]
    assert node.labels == {"zone": "a"}


def test_the_node_form_says_what_the_agent_reports(admin_client, node):
    response = admin_client.get(_change(node))
    html = response.content.decode()
    form = response.context["adminform"].form
    assert set(form.fields) == {"labels"}
    assert "Reported by the node&#x27;s agent (read-only)" in html
    assert "Decided by operators" in html


def test_node_labels_in_admin_must_map_strings_to_strings(admin_client, node):
    response = admin_client.post(_change(node), _node_post(node, labels='{"zone": 1}'))
    assert response.status_code == 200
    assert "Labels must be an object of string" in response.content.decode()
    node.refresh_from_db()
    assert node.labels == {}


def test_nodes_are_not_added_in_admin(admin_client, db):
    assert admin_client.get(reverse("admin:inventory_node_add")).status_code == 403


def test_view_on_site_with_a_key_that_is_not_a_uuid_is_a_404(admin_client, node):
    content_type = ContentType.objects.get_for_model(Node)
    for key in ("not-a-uuid", "1", "%00"):
        response = admin_client.get(f"/admin/r/{content_type.pk}/{key}/")
        assert response.status_code == 404, key


def test_view_on_site_still_needs_staff(operator_client, node):
    content_type = ContentType.objects.get_for_model(Node)
    response = operator_client.get(f"/admin/r/{content_type.pk}/not-a-uuid/")
    assert response.status_code == 302 and "/login/" in response["Location"]
