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

from core.events import make_event
from inventory import live as overview
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


# --- the backends' readings ---------------------------------------------------------------

READINGS = {"slots": 4, "busy": 2, "deferred": 0, "tokens_per_second": 33.0, "kv_used": 0.5}


def _running_with_readings(model, **fields) -> tuple[Deployment, Instance]:
    deployment = _create(model, **fields)
    instance = deployment.instances.get()
    Instance.objects.filter(pk=instance.pk).update(
        state=InstanceState.RUNNING, backend="llama_server", port=9001, readings=READINGS
    )
    return deployment, instance


def _readings_event(instance: Instance):
    return make_event(
        "instance.readings",
        instance_id=str(instance.pk),
        deployment_id=str(instance.deployment_id),
        node_id=str(instance.node_id),
    )


def test_readings_send_only_the_readings_cell_to_the_deployments_page(fleet, model_7b, queued):
    from scheduling import live

    deployment, instance = _running_with_readings(model_7b)
    html = live.render_event(_readings_event(instance), False, str(deployment.pk))
    assert html.startswith(f'<td id="readings-{instance.pk}" class="readings" hx-swap-oob="true">')
    assert ">2/4<" in html and "33.0 tok/s" in html and "KV 50%" in html
    assert 'id="instance-' not in html and 'id="deployment-memory"' not in html


def test_readings_of_another_deployment_send_nothing(fleet, model_7b, queued):
    from scheduling import live

    ours = _create(model_7b)
    _, other = _running_with_readings(model_7b, served_name="other")
    assert live.render_event(_readings_event(other), False, str(ours.pk)) == ""


def test_readings_update_the_deployments_row_of_the_list(fleet, model_7b, queued):
    from scheduling import live

    deployment, instance = _running_with_readings(model_7b)
    html = live.render_event(_readings_event(instance), False, None)
    assert html.startswith(f'<tr id="deployment-{deployment.pk}"')
    assert ">2/4<" in html and "33.0 tok/s" in html


def test_the_gateway_does_not_reload_its_routes_on_readings():
    from gateway import feed

    assert "instance.readings" not in feed.ROUTE_KINDS
    assert overview.render_event(make_event("instance.readings", instance_id="x")) == ""


async def test_the_agents_readings_reach_the_deployments_page_live(
    operator_user, fleet, model_7b, queued, settings, monkeypatch
):
    from scheduling import supervisor
    from scheduling.readings import Sample

    deployment, instance = await sync_to_async(_running_with_readings)(model_7b)
    path = f"/ws/deployments/{deployment.pk}/"
    communicator, _ = await _connect(operator_user, settings, path)
    await communicator.receive_from(timeout=5)
    await asyncio.sleep(0.2)

    busy = Sample(
        at=1.0, slots=4, busy=4, deferred=1, tokens_total=10, prompt_tokens_total=5,
        kv_tokens=2048, kv_cells=4096,
    )  # fmt: skip
    monkeypatch.setattr("scheduling.readings.read", lambda port, host="", timeout=1.0: busy)
    node = await sync_to_async(lambda: Instance.objects.get(pk=instance.pk).node)()
    await sync_to_async(supervisor.take_readings)(node, {})
    html = await _receive_until(communicator, f'id="readings-{instance.pk}"')
    assert ">4/4<" in html and "+1 waiting" in html
    await communicator.disconnect()
