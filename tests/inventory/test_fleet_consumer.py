import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from core import consumers, events
from inventory import telemetry
from inventory.consumers import FleetConsumer
from inventory.probe import GpuReading

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def _connect(user) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(FleetConsumer.as_asgi(), "/ws/fleet/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    return communicator, connected


async def test_anonymous_sockets_are_closed(db):
    _, connected = await _connect(AnonymousUser())
    assert not connected


async def test_connecting_sends_a_full_resync(viewer_user, gpus):
    communicator, connected = await _connect(viewer_user)
    assert connected
    html = await communicator.receive_from(timeout=5)
    assert 'id="fleet" hx-swap-oob="true"' in html
    for gpu in gpus:
        assert f'id="gpu-{gpu.id}"' in html
    assert 'id="alerts-panel" hx-swap-oob="true"' in html
    await communicator.disconnect()


async def test_a_tick_written_by_another_process_reaches_the_browser(
    viewer_user, node, gpus, settings
):
    settings.GPUFLEET_EVENT_POLL = 0.05
    communicator, _ = await _connect(viewer_user)
    await communicator.receive_from(timeout=5)  # resync
    readings = [
        GpuReading(
            index=g.index, uuid=g.uuid, utilization=77.0, memory_used=1, memory_total=g.memory_total
        )
        for g in gpus
    ]
    await asyncio.sleep(0.2)  # let the relay note where the outbox ends
    await sync_to_async(telemetry.record_readings)(node, readings)
    html = await communicator.receive_from(timeout=5)
    assert f'id="node-{node.pk}-gpus" hx-swap-oob="true"' in html
    assert html.count('data-util="77"') == 2
    await communicator.disconnect()


async def test_alert_changes_re_render_the_alert_panel(viewer_user, node):
    communicator, _ = await _connect(viewer_user)
    await communicator.receive_from(timeout=5)
    event = events.make_event("alerts.changed")
    await communicator.send_input({"type": "fleet.event", "event": event})
    html = await communicator.receive_from(timeout=5)
    assert html.startswith('<section id="alerts-panel" hx-swap-oob="true">')
    await communicator.disconnect()


async def test_a_deactivated_user_is_disconnected_on_the_next_check(viewer_user, node):
    communicator, _ = await _connect(viewer_user)
    await communicator.receive_from(timeout=5)
    viewer_user.is_active = False
    await sync_to_async(viewer_user.save)()
    output = await communicator.receive_output(timeout=consumers.RECHECK_EVERY + 1)
    assert output == {"type": "websocket.close", "code": 4401}
