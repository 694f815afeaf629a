"""Small ASGI helpers: read a bounded body, send a whole answer, watch for a disconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import GatewayError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
JSON = [(b"content-type", b"application/json")]


class Disconnected(Exception):
    """The client went away while its request was being read."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body; 413 once it passes ``limit`` bytes (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError(
                413, f"The request body is larger than {limit} bytes.", code="body_too_large"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = list(headers if headers is not None else JSON)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: Any) -> None:
    await send_bytes(send, status, json.dumps(data).encode())


async def send_error(send: Send, error: GatewayError) -> None:
    headers = list(JSON)
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send_bytes(send, error.status, error.body(), headers)


async def wait_disconnect(receive: Receive) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(receive: Receive, work: Awaitable[Any]) -> bool:
    """Run ``work``; cancel it if the client disconnects first. True: the work finished."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        task.result()  # re-raise what the work raised
        return True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return False
