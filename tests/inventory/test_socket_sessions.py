"""A live socket ends with the login session it was opened under."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from core import consumers
from inventory.consumers import FleetConsumer
from scheduling.consumers import DeploymentsConsumer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ENDED = {"type": "websocket.close", "code": 4401}


def _logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def _open(client: Client, consumer=FleetConsumer, path: str = "/ws/fleet/"):
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        AuthMiddlewareStack(consumer.as_asgi()), path, headers=[(b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_from(timeout=5)  # the resync
    return communicator


async def test_logging_out_closes_the_sessions_sockets_at_once(viewer_user, monkeypatch):
    monkeypatch.setattr(consumers, "RECHECK_EVERY", 60.0)  # the logout message alone
    client = await sync_to_async(_logged_in)(viewer_user)
    socket = await _open(client)
    await sync_to_async(client.post)("/logout/")
    assert await socket.receive_output(timeout=2) == ENDED


async def test_logging_out_leaves_the_users_other_sessions_open(viewer_user, monkeypatch):
    monkeypatch.setattr(consumers, "RECHECK_EVERY", 0.2)
    leaving = await sync_to_async(_logged_in)(viewer_user)
    staying = await sync_to_async(_logged_in)(viewer_user)
    gone, kept = await _open(leaving), await _open(staying)
    await sync_to_async(leaving.post)("/logout/")
    assert await gone.receive_output(timeout=2) == ENDED
    assert await kept.receive_nothing(timeout=0.6)
    await kept.disconnect()


async def test_a_password_change_closes_the_users_sockets(viewer_user, monkeypatch):
    monkeypatch.setattr(consumers, "RECHECK_EVERY", 60.0)
    client = await sync_to_async(_logged_in)(viewer_user)
    socket = await _open(client)
    viewer_user.set_password("a-brand-new-password")
    await sync_to_async(viewer_user.save)()
    assert await socket.receive_output(timeout=2) == ENDED


async def test_deactivating_the_user_closes_their_sockets(viewer_user, monkeypatch):
    monkeypatch.setattr(consumers, "RECHECK_EVERY", 60.0)
    client = await sync_to_async(_logged_in)(viewer_user)
    socket = await _open(client, DeploymentsConsumer, "/ws/deployments/")
    viewer_user.is_active = False
    await sync_to_async(viewer_user.save)()
    assert await socket.receive_output(timeout=2) == ENDED


async def test_an_expired_session_is_closed_within_the_recheck(viewer_user):
    assert consumers.RECHECK_EVERY <= 2.0
    client = await sync_to_async(_logged_in)(viewer_user)
    socket = await _open(client)
    key = client.cookies["sessionid"].value
    past = timezone.now() - timedelta(seconds=1)
    await sync_to_async(Session.objects.filter(session_key=key).update)(expire_date=past)
    assert await socket.receive_output(timeout=consumers.RECHECK_EVERY + 1) == ENDED


async def test_a_session_deleted_by_another_process_is_closed_within_the_recheck(viewer_user):
    client = await sync_to_async(_logged_in)(viewer_user)
    socket = await _open(client)
    key = client.cookies["sessionid"].value
    await sync_to_async(Session.objects.filter(session_key=key).delete)()
    assert await socket.receive_output(timeout=consumers.RECHECK_EVERY + 1) == ENDED
