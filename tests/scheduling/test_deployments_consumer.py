"""The deployment pages' websocket: a resync on connect, then the instance rows, the
summary and the memory bars that each event changes (through the events outbox, as
events from the worker and the agent arrive)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from inventory import live as overview
from inventory.events import make_event
from scheduling import actions, lifecycle
from scheduling.choices import InstanceState
from scheduling.models import Deployment, Instance
from scheduling.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)


async def _connect(user, settings, path: str = "/ws/deployments/"):
    settings.GPUFLEET_EVENT_POLL = 0.05
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    return communicator, connected


async def _receive_until(communicator, text: str, tries: int = 10) -> str:
    """Messages until one holds ``text`` (a pass may send a few events first)."""
    for _ in range(tries):
        html = await communicator.receive_from(timeout=5)
        if text in html:
            return html
    raise AssertionError(f"no message with {text!r}")


def _create(model, **fields) -> Deployment:
    fields.setdefault("served_name", "seven-b")
    return actions.do_create_deployment(model=model, **fields)


async def test_anonymous_sockets_are_closed(db, settings):
    _, connected = await _connect(AnonymousUser(), settings)
    assert not connected


async def test_the_list_socket_sends_the_table_on_connect(
    viewer_user, fleet, model_7b, queued, settings
):
    deployment = await sync_to_async(_create)(model_7b)
    communicator, connected = await _connect(viewer_user, settings)
    assert connected
    html = await communicator.receive_from(timeout=5)
    assert 'id="deployment-table" hx-swap-oob="true"' in html
    assert f'id="deployment-{deployment.pk}"' in html
    await communicator.disconnect()


async def test_the_detail_socket_resyncs_then_sends_an_instance_row_on_its_change(
    operator_user, fleet, model_7b, queued, settings
):
    deployment = await sync_to_async(_create)(model_7b)
    instance = await sync_to_async(deployment.instances.get)()
    path = f"/ws/deployments/{deployment.pk}/"
    communicator, connected = await _connect(operator_user, settings, path)
    assert connected
    resync = await communicator.receive_from(timeout=5)
    assert '<section id="deployment-summary"' in resync and 'hx-swap-oob="true"' in resync
    assert f'id="instance-{instance.pk}"' in resync and ">Stop</button>" in resync
    await asyncio.sleep(0.2)  # let the relay note where the outbox ends

    await sync_to_async(lifecycle.do_request_stop)(instance)
    html = await _receive_until(communicator, f'id="instance-{instance.pk}"')
    row = f'<tbody id="instance-{instance.pk}" class="instance stopped" hx-swap-oob="true">'
    assert row in html
    assert 'id="deployment-counts"' in html and 'id="deployment-memory"' in html
    assert 'id="deployment-summary"' not in html  # the scale input is left alone
    await communicator.disconnect()


async def test_the_detail_socket_sends_the_summary_when_the_deployment_changes(
    viewer_user, fleet, model_7b, queued, settings
):
    deployment = await sync_to_async(_create)(model_7b)
    communicator, _ = await _connect(viewer_user, settings, f"/ws/deployments/{deployment.pk}/")
    await communicator.receive_from(timeout=5)
    await asyncio.sleep(0.2)

    await sync_to_async(actions.do_scale)(deployment, 2)
    html = await _receive_until(communicator, 'id="deployment-summary"')
    assert 'hx-swap-oob="true"' in html and "0/2 running" in html
    assert "<button" not in html  # viewers get no buttons
    await communicator.disconnect()


async def test_the_list_socket_updates_a_row_when_one_of_its_instances_changes(
    viewer_user, fleet, model_7b, queued, settings
):
    deployment = await sync_to_async(_create)(model_7b)
    instance = await sync_to_async(deployment.instances.get)()
    communicator, _ = await _connect(viewer_user, settings)
    await communicator.receive_from(timeout=5)
    await asyncio.sleep(0.2)

    await sync_to_async(lifecycle.do_request_stop)(instance)
    html = await _receive_until(communicator, f'id="deployment-{deployment.pk}"')
    assert html.startswith("<tr ") and 'hx-swap-oob="true"' in html
    assert "no instances" in html
    await communicator.disconnect()


async def test_a_deleted_deployment_tells_its_page(viewer_user, fleet, model_7b, queued, settings):
    deployment = await sync_to_async(_create)(model_7b)
    communicator, _ = await _connect(viewer_user, settings, f"/ws/deployments/{deployment.pk}/")
    await communicator.receive_from(timeout=5)
    await asyncio.sleep(0.2)

    await sync_to_async(actions.do_delete_deployment)(deployment)
    html = await _receive_until(communicator, "has been deleted")
    assert 'id="instance-table" hx-swap-oob="delete"' in html
    assert not await sync_to_async(Instance.objects.filter(deployment_id=deployment.pk).exists)()
    await communicator.disconnect()


async def test_another_deployments_claim_on_a_shared_gpu_redraws_the_memory_bars(
    viewer_user, fleet, model_7b, queued, settings
):
    ours = await sync_to_async(_create)(model_7b)
    claim = await sync_to_async(lambda: ours.instances.get().claims.select_related("gpu").get())()
    communicator, _ = await _connect(viewer_user, settings, f"/ws/deployments/{ours.pk}/")
    await communicator.receive_from(timeout=5)
    await asyncio.sleep(0.2)

    await sync_to_async(_create)(model_7b, served_name="other", only_gpus=[claim.gpu])
    html = await _receive_until(communicator, "other #")
    assert html.startswith('<section id="deployment-memory"') and "seg-other" in html
    bar = html.split(f'id="membar-{claim.gpu_id}"')[1]
    assert bar.index('class="segment seg-ours"') < bar.index('class="segment seg-other"')
    assert 'id="instance-table"' not in html
    await communicator.disconnect()


def test_the_overview_ignores_instance_events(db):
    event = make_event("instance.changed", deployment_id="x", instance_id="y", node_id="z")
    assert overview.render_event(event) == ""


def test_the_overview_shows_only_its_cold_start_panel_after_a_deployment_event(
    fleet, model_7b, queued
):
    deployment = _create(model_7b)
    event = make_event("deployment.changed", deployment_id=str(deployment.pk))
    assert overview.render_event(event).strip() == (
        '<section id="cold-starts" hx-swap-oob="true"></section>'
    )
    Deployment.objects.filter(pk=deployment.pk).update(waiting=3)
    html = overview.render_event(make_event("deployment.changed", deployment_id="x"))
    assert "Cold start of" in html and "3 requests waiting" in html and "seven-b" in html


def test_an_instance_of_another_deployment_elsewhere_sends_nothing(fleet, model_7b, queued):
    from scheduling import live

    ours = _create(model_7b)
    other = _create(model_7b, served_name="other")
    Instance.objects.filter(deployment=other).update(state=InstanceState.PENDING, node=None)
    event = make_event(
        "instance.changed",
        instance_id=str(other.instances.get().pk),
        deployment_id=str(other.pk),
        node_id="",
    )
    assert live.render_event(event, False, str(ours.pk)) == ""
