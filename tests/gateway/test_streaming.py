"""The gateway's request path at the ASGI level against a scripted upstream: events are
forwarded as they arrive (the first reaches the client while the upstream still holds
the rest), a client that disconnects closes the upstream connection, the usage the
client asked for, and a retry on another instance when the first cannot be reached."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest

from gateway.app import Gateway
from gateway.keys import KeyInfo
from gateway.models import key_digest
from gateway.table import Backend, Route
from tests.gateway.upstream import Upstream

RAW_KEY = "gfk_test-key"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def _route(*backends: Backend) -> Route:
    return Route(
        deployment_id="d1", served_name="m", running=True, priority=50, replicas=2,
        min_replicas=1, max_queue=4, cold_start_timeout=5.0, backends=backends,
    )  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = await Upstream().start()
    yield server
    server.release.set()
    await server.stop()


def _gateway(*backends: Backend) -> Gateway:
    gateway = Gateway(live=False)
    gateway.keys.replace({key_digest(RAW_KEY): KeyInfo("k1", "test", frozenset(), None)})
    gateway.table.replace([_route(*backends)])
    return gateway


class Client:
    """One ASGI request: its body, then a disconnect when ``hang_up`` is set."""

    def __init__(self, body: dict) -> None:
        self.body = json.dumps(body).encode()
        self.sent_body = False
        self.hang_up = asyncio.Event()
        self.first_chunk = asyncio.Event()
        self.messages: list[dict] = []

    async def receive(self) -> dict:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.first_chunk.set()

    def run(self, gateway: Gateway) -> asyncio.Task[None]:
        scope = {
            "type": "http", "method": "POST", "path": "/v1/chat/completions",
            "headers": [(b"authorization", b"Bearer " + RAW_KEY.encode())],
        }  # fmt: skip
        return asyncio.ensure_future(gateway(scope, self.receive, self.send))

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.messages if m["type"] == "http.response.start")

    @property
    def text(self) -> str:
        parts = [m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"]
        return b"".join(parts).decode()


async def test_the_first_event_reaches_the_client_while_the_upstream_still_holds_the_rest(
    upstream: Upstream,
):
    gateway = _gateway(Backend("i1", "running", "127.0.0.1", upstream.port))
    client = Client(BODY)
    task = client.run(gateway)
    await asyncio.wait_for(client.first_chunk.wait(), 5)
    assert "Hello" in client.text and not upstream.finished
    upstream.release.set()
    await asyncio.wait_for(task, 5)
    assert client.status == 200 and "world" in client.text and client.text.endswith("[DONE]\n\n")
    assert upstream.requests[0]["stream_options"] == {"include_usage": True}, "asked upstream"
    assert '"usage"' not in client.text, "the client did not ask for usage"
    await gateway.stop()


async def test_a_client_that_disconnects_closes_the_upstream_request(upstream: Upstream):
    gateway = _gateway(Backend("i1", "running", "127.0.0.1", upstream.port))
    client = Client(BODY)
    task = client.run(gateway)
    await asyncio.wait_for(client.first_chunk.wait(), 5)
    client.hang_up.set()
    await asyncio.wait_for(task, 5)
    await asyncio.wait_for(upstream.closed.wait(), 5)
    assert not upstream.finished
    assert gateway.table.in_flight == {}, "nothing counted in flight afterwards"
    await gateway.stop()


async def test_usage_is_made_up_from_the_chunks_when_the_backend_sends_none(upstream: Upstream):
    gateway = _gateway(Backend("i1", "running", "127.0.0.1", upstream.port))
    upstream.release.set()
    client = Client(BODY | {"stream_options": {"include_usage": True}})
    await asyncio.wait_for(client.run(gateway), 5)
    events = [e for e in client.text.split("\n\n") if e.startswith("data: {")]
    usage = json.loads(events[-1][6:])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2
    assert usage["x_gpufleet_estimated"] is True
    await gateway.stop()


async def test_a_backend_that_cannot_be_reached_is_retried_once_on_another(upstream: Upstream):
    dead = Backend("a-dead", "running", "127.0.0.1", _closed_port())
    live = Backend("b-live", "running", "127.0.0.1", upstream.port)
    gateway = _gateway(dead, live)
    upstream.release.set()
    client = Client(BODY)
    await asyncio.wait_for(client.run(gateway), 10)
    assert client.status == 200 and "world" in client.text
    assert gateway.table.pick(_route(dead, live)) == live, "the failed one is avoided a while"
    await gateway.stop()


async def test_a_5xx_before_the_first_byte_with_no_other_instance_is_a_502():
    failing = await Upstream(status=500).start()
    gateway = _gateway(Backend("i1", "running", "127.0.0.1", failing.port))
    client = Client(BODY)
    await asyncio.wait_for(client.run(gateway), 10)
    assert client.status == 502
    assert json.loads(client.text)["error"]["code"] == "upstream_error"
    await failing.stop()
    await gateway.stop()
