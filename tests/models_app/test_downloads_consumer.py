"""The downloads page's websocket: the table on connect, rows as downloads progress."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from models_app import actions
from models_app.consumers import DownloadsConsumer
from tests.factories import ModelFileFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def _connect(user, settings) -> tuple[WebsocketCommunicator, bool]:
    settings.GPUFLEET_EVENT_POLL = 0.05
    communicator = WebsocketCommunicator(DownloadsConsumer.as_asgi(), "/ws/downloads/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    return communicator, connected


async def test_anonymous_sockets_are_closed(db, settings):
    _, connected = await _connect(AnonymousUser(), settings)
    assert not connected


async def test_connecting_sends_the_whole_table(viewer_user, settings):
    copy = await sync_to_async(ModelFileFactory)()
    communicator, connected = await _connect(viewer_user, settings)
    assert connected
    html = await communicator.receive_from(timeout=5)
    assert 'id="download-table" hx-swap-oob="true"' in html
    assert f'id="copy-{copy.pk}"' in html
    await communicator.disconnect()


async def test_progress_of_a_download_updates_its_row_only(operator_user, settings):
    copy = await sync_to_async(ModelFileFactory)(bytes_total=1000)
    communicator, _ = await _connect(operator_user, settings)
    await communicator.receive_from(timeout=5)
    await asyncio.sleep(0.2)  # let the relay note where the outbox ends

    claimed = await sync_to_async(actions.do_claim)(str(copy.pk), "w")
    await communicator.receive_from(timeout=5)  # downloading
    await sync_to_async(actions.do_progress)(claimed, "w", actions.Progress(250, 100.0, 7.0))
    html = await communicator.receive_from(timeout=5)

    assert html.startswith("<tr ") and 'id="download-table"' not in html
    assert f'id="copy-{copy.pk}" class="copy downloading" hx-swap-oob="true"' in html
    assert "25.0 %" in html and "7 s" in html
    assert ">Cancel</button>" in html  # an operator's row has the buttons
    await communicator.disconnect()


async def test_viewers_get_rows_without_buttons(viewer_user, settings):
    copy = await sync_to_async(ModelFileFactory)()
    communicator, _ = await _connect(viewer_user, settings)
    await communicator.receive_from(timeout=5)
    await asyncio.sleep(0.2)
    await sync_to_async(actions.do_cancel)(copy)
    html = await communicator.receive_from(timeout=5)
    assert 'class="copy cancelled"' in html and "<button" not in html
    await communicator.disconnect()


async def test_a_deleted_copy_removes_its_row(viewer_user, settings):
    copy = await sync_to_async(ModelFileFactory)(state="deleting")
    communicator, _ = await _connect(viewer_user, settings)
    await communicator.receive_from(timeout=5)
    await asyncio.sleep(0.2)
    await sync_to_async(actions.do_deleted)(copy)
    html = await communicator.receive_from(timeout=5)
    assert f'<tr id="copy-{copy.pk}" hx-swap-oob="delete">' in html
    await communicator.disconnect()
