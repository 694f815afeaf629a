"""The node page's websocket: a resync of header, GPU rows and drain panel, and the
drain panel again when the node's status changes."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from inventory import actions
from inventory.routing import websocket_urlpatterns

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def _connect(user, node) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/nodes/{node.pk}/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def test_draining_a_node_updates_its_open_page(operator_user, node, gpus, settings):
    settings.GPUFLEET_EVENT_POLL = 0.05
    communicator = await _connect(operator_user, node)
    html = await communicator.receive_from(timeout=5)
    assert f'id="node-{node.pk}-header" hx-swap-oob="true"' in html
    assert f'id="node-{node.pk}-gpus" hx-swap-oob="true"' in html
    assert "Drain</button>" in html
    await asyncio.sleep(0.2)  # let the relay note where the outbox ends
    await sync_to_async(actions.do_set_draining)(node, True)
    html = await communicator.receive_from(timeout=5)
    assert "Draining" in html and "Still on this node" in html and "Stop draining" in html
    await communicator.disconnect()


async def test_a_viewer_sees_no_drain_button_live(viewer_user, node):
    communicator = await _connect(viewer_user, node)
    html = await communicator.receive_from(timeout=5)
    assert "Drain</button>" not in html
    await communicator.disconnect()
