"""Operators plan and delete maintenance windows per node; viewers cannot."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.urls import reverse
from django.utils import timezone

from inventory.choices import NodeStatus
from inventory.models import MaintenanceWindow, Node
from tests.factories import MaintenanceWindowFactory


def _new_url(node) -> str:
    return reverse("inventory:maintenance-new", args=[node.pk])


def _delete_url(window) -> str:
    return reverse("inventory:maintenance-delete", args=[window.pk])


def _local(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M")


def _data(start: datetime, end: datetime, message: str = "Driver upgrade") -> dict[str, str]:
    return {"starts_at": _local(start), "ends_at": _local(end), "message": message}


def test_operator_sees_the_form_with_sensible_defaults(operator_client, node):
    response = operator_client.get(_new_url(node))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'type="datetime-local"' in html and 'name="message"' in html
    assert "No maintenance planned for this node." in html


def test_operator_plans_a_window(
    sent_events, operator_client, operator_user, node, django_capture_on_commit_callbacks
):
    start = timezone.now() + timedelta(days=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(_new_url(node), _data(start, start + timedelta(hours=2)))
    assert response.status_code == 302
    window = MaintenanceWindow.objects.get()
    assert window.node == node and window.created_by == operator_user
    assert window.message == "Driver upgrade"
    assert "maintenance.changed" in [e["kind"] for e in sent_events]


def test_the_new_window_is_listed_and_announced(operator_client, node):
    start = timezone.now() + timedelta(days=1)
    response = operator_client.post(
        _new_url(node), _data(start, start + timedelta(hours=2)), follow=True
    )
    html = response.content.decode()
    assert "Maintenance planned" in html  # the banner on every page
    assert "Delete</button>" in html


def test_window_must_end_after_it_starts(operator_client, node):
    start = timezone.now() + timedelta(days=1)
    response = operator_client.post(_new_url(node), _data(start, start - timedelta(hours=1)))
    assert response.status_code == 422
    assert "The window must end after it starts." in response.content.decode()
    assert not MaintenanceWindow.objects.exists()


def test_window_that_already_ended_is_rejected(operator_client, node):
    start = timezone.now() - timedelta(days=2)
    response = operator_client.post(_new_url(node), _data(start, start + timedelta(hours=1)))
    assert response.status_code == 422
    assert "This time has already passed." in response.content.decode()
    assert not MaintenanceWindow.objects.exists()


def test_message_is_required(operator_client, node):
    start = timezone.now() + timedelta(days=1)
    response = operator_client.post(
        _new_url(node), _data(start, start + timedelta(hours=1), message="")
    )
    assert response.status_code == 422
    assert not MaintenanceWindow.objects.exists()


def test_window_starting_now_puts_the_node_into_maintenance(operator_client, node):
    now = timezone.now()
    operator_client.post(
        _new_url(node), _data(now - timedelta(minutes=1), now + timedelta(hours=1))
    )
    node.refresh_from_db()
    assert node.status == NodeStatus.MAINTENANCE


def test_viewer_cannot_plan_maintenance(viewer_client, node):
    start = timezone.now() + timedelta(days=1)
    assert viewer_client.get(_new_url(node)).status_code == 403
    assert (
        viewer_client.post(_new_url(node), _data(start, start + timedelta(hours=1))).status_code
        == 403
    )
    assert not MaintenanceWindow.objects.exists()


def test_planning_for_an_unknown_node_is_not_found(operator_client, db):
    url = reverse("inventory:maintenance-new", args=["8c1f3a0e-0000-4000-8000-000000000000"])
    assert operator_client.get(url).status_code == 404


def test_operator_deletes_a_window(
    operator_client, node, django_capture_on_commit_callbacks, sent_events
):
    window = MaintenanceWindowFactory(node=node)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(_delete_url(window))
    assert response.status_code == 302
    assert response.url == _new_url(node)
    assert not MaintenanceWindow.objects.exists()
    assert "maintenance.changed" in [e["kind"] for e in sent_events]


def test_ending_the_active_window_brings_the_node_back_online(operator_client, node):
    now = timezone.now()
    window = MaintenanceWindowFactory(node=node, starts_at=now - timedelta(hours=1))
    Node.objects.filter(pk=node.pk).update(status=NodeStatus.MAINTENANCE)
    operator_client.post(_delete_url(window))
    node.refresh_from_db()
    assert node.status == NodeStatus.ONLINE


def test_viewer_cannot_delete_a_window(viewer_client, node):
    window = MaintenanceWindowFactory(node=node)
    assert viewer_client.post(_delete_url(window)).status_code == 403
    assert MaintenanceWindow.objects.filter(pk=window.pk).exists()


def test_deleting_needs_a_post(operator_client, node):
    window = MaintenanceWindowFactory(node=node)
    assert operator_client.get(_delete_url(window)).status_code == 405
    assert MaintenanceWindow.objects.filter(pk=window.pk).exists()


def test_after_a_change_the_operator_goes_back_where_they_came_from(operator_client, node):
    window = MaintenanceWindowFactory(node=node)
    response = operator_client.post(_delete_url(window), {"next": "/"})
    assert response.url == "/"


def test_a_foreign_next_address_is_ignored(operator_client, node):
    window = MaintenanceWindowFactory(node=node)
    response = operator_client.post(_delete_url(window), {"next": "https://evil.example/"})
    assert response.url == _new_url(node)


def test_upcoming_windows_of_other_nodes_are_not_listed(operator_client, node):
    MaintenanceWindowFactory(message="elsewhere")
    MaintenanceWindowFactory(node=node, message="here")
    html = operator_client.get(_new_url(node)).content.decode()
    listing = html[html.index("Active and upcoming") :]
    assert "here" in listing and "elsewhere" not in listing
