"""Draining a node from its page and the REST API (operators only), the drain panel, and
the automatic drain GPUFLEET_DRAIN_BEFORE ahead of a maintenance window."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from inventory import actions
from inventory.choices import NodeStatus
from inventory.models import Node
from tests.factories import MaintenanceWindowFactory, NodeFactory

pytestmark = pytest.mark.django_db
BEFORE = settings.GPUFLEET_DRAIN_BEFORE


def status(node: Node) -> str:
    node.refresh_from_db()
    return node.status


# --- the page ------------------------------------------------------------------------------


def test_an_operator_drains_a_node_from_its_page(operator_client, node):
    page = operator_client.get(f"/nodes/{node.pk}/")
    assert b"Drain</button>" in page.content
    response = operator_client.post(f"/nodes/{node.pk}/drain/", {"drain": "1"})
    assert response.status_code == 302
    assert status(node) == NodeStatus.DRAINING
    page = operator_client.get(f"/nodes/{node.pk}/")
    assert b"Stop draining" in page.content and b"Still on this node" in page.content
    operator_client.post(f"/nodes/{node.pk}/drain/", {"drain": "0"})
    assert status(node) == NodeStatus.ONLINE


def test_a_viewer_sees_no_drain_button_and_may_not_drain(viewer_client, node):
    page = viewer_client.get(f"/nodes/{node.pk}/")
    assert page.status_code == 200 and b"Drain</button>" not in page.content
    response = viewer_client.post(f"/nodes/{node.pk}/drain/", {"drain": "1"})
    assert response.status_code == 403
    assert status(node) == NodeStatus.ONLINE


def test_an_anonymous_visitor_may_not_drain(anon_client, node):
    response = anon_client.post(f"/nodes/{node.pk}/drain/", {"drain": "1"})
    assert response.status_code in (302, 403)
    assert status(node) == NodeStatus.ONLINE


# --- the API -------------------------------------------------------------------------------


def test_an_operator_drains_and_undrains_through_the_api(operator_client, node):
    response = operator_client.post(f"/api/v1/nodes/{node.pk}/drain")
    assert response.status_code == 200
    assert response.json()["status"] == "draining" and response.json()["drain"] == []
    assert operator_client.post(f"/api/v1/nodes/{node.pk}/drain").status_code == 200
    response = operator_client.post(f"/api/v1/nodes/{node.pk}/undrain")
    assert response.json()["status"] == "online"


def test_a_read_only_user_may_not_drain_through_the_api(viewer_client, node):
    response = viewer_client.post(f"/api/v1/nodes/{node.pk}/drain")
    assert response.status_code == 403
    assert status(node) == NodeStatus.ONLINE


def test_an_offline_node_cannot_be_drained(operator_client):
    node = NodeFactory(status=NodeStatus.OFFLINE)
    response = operator_client.post(f"/api/v1/nodes/{node.pk}/drain")
    assert response.status_code == 409
    assert status(node) == NodeStatus.OFFLINE


# --- before a maintenance window -----------------------------------------------------------


def test_a_node_drains_before_its_window_and_takes_work_again_after_it(node):
    now = timezone.now()
    start = now + timedelta(seconds=BEFORE + 60)
    MaintenanceWindowFactory(node=node, starts_at=start, ends_at=start + timedelta(hours=1))
    actions.do_apply_maintenance_windows(now)
    assert status(node) == NodeStatus.ONLINE, "not yet: the window is further away"
    actions.do_apply_maintenance_windows(start - timedelta(seconds=BEFORE - 1))
    assert status(node) == NodeStatus.DRAINING
    actions.do_apply_maintenance_windows(start + timedelta(minutes=1))
    assert status(node) == NodeStatus.MAINTENANCE
    Node.objects.filter(pk=node.pk).update(last_heartbeat=start + timedelta(hours=1))
    actions.do_apply_maintenance_windows(start + timedelta(hours=1, seconds=1))
    assert status(node) == NodeStatus.ONLINE
    assert node.accepts_work


def test_an_offline_node_is_not_drained_before_its_window(node):
    Node.objects.filter(pk=node.pk).update(status=NodeStatus.OFFLINE)
    start = timezone.now() + timedelta(seconds=60)
    MaintenanceWindowFactory(node=node, starts_at=start, ends_at=start + timedelta(hours=1))
    assert actions.do_drain_before_windows() == []
    assert status(node) == NodeStatus.OFFLINE


# --- removing a node for good --------------------------------------------------------------


def test_an_operator_removes_an_offline_node_through_the_api(operator_client):
    node = NodeFactory(status=NodeStatus.OFFLINE)
    response = operator_client.delete(f"/api/v1/nodes/{node.pk}")
    assert response.status_code == 204
    assert not Node.objects.filter(pk=node.pk).exists()
    assert operator_client.get(f"/api/v1/nodes/{node.pk}").status_code == 404


@pytest.mark.parametrize("state", [NodeStatus.ONLINE, NodeStatus.DRAINING, NodeStatus.MAINTENANCE])
def test_a_node_that_still_reports_is_not_removed(operator_client, state):
    node = NodeFactory(status=state)
    response = operator_client.delete(f"/api/v1/nodes/{node.pk}")
    assert response.status_code == 409
    assert "only an offline node" in response.json()["detail"]
    assert status(node) == state


def test_a_read_only_user_may_not_remove_a_node(viewer_client):
    node = NodeFactory(status=NodeStatus.OFFLINE)
    assert viewer_client.delete(f"/api/v1/nodes/{node.pk}").status_code == 403
    assert Node.objects.filter(pk=node.pk).exists()
