"""Forward one request to one backend and the answer back, chunk by chunk.

Server-sent events are passed on event by event as they arrive (an event is sent as
soon as its closing blank line is in; nothing waits for the rest of the stream). The
usage the backend reports (``usage`` in a JSON answer or in a stream's last event) is
read on the way; when the gateway itself asked for a stream's usage
(``stream_options.include_usage``) and the client did not, that event is dropped.

A connection error or a 5xx before anything was sent to the client raises
``UpstreamFailed`` (the caller may retry on another instance); a failure once the
answer has started ends the stream with an error event.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.asgi_io import Send
from gateway.table import Backend

_BOUNDARY = re.compile(rb"\r?\n\r?\n")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PASSED_HEADERS = frozenset({b"content-type"})


class UpstreamFailed(Exception):
    """The backend could not be used, and the client has been sent nothing yet."""


@dataclass
class Exchange:
    """What one forwarded request did (for usage and metrics)."""

    status: int = 0
    started: bool = False  # the answer to the client has begun
    first_byte: float | None = None  # monotonic time the first body bytes went out
    usage: dict[str, Any] = field(default_factory=dict)
    chunks: int = 0  # stream events with choices (a count of tokens if no usage came)

    @property
    def prompt_tokens(self) -> int:
        return _int(self.usage.get("prompt_tokens"))

    @property
    def completion_tokens(self) -> int:
        if "completion_tokens" in self.usage:
            return _int(self.usage.get("completion_tokens"))
        return self.chunks


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class SseScanner:
    """Splits a byte stream into whole events; notes usage, ``[DONE]`` and chunk counts.

    A backend that streams no usage (llama-cpp-python's server) gets one made up before
    ``[DONE]`` when the client asked for it: completion tokens counted from the chunks
    (one token each), prompt tokens 0 (unknown), marked ``"x_gpufleet_estimated": true``.
    """

    def __init__(self, exchange: Exchange, strip_usage: bool) -> None:
        self.exchange = exchange
        self.strip_usage = strip_usage
        self.buffer = b""
        self.done = False
        self.first: dict[str, Any] | None = None

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        kept: list[bytes] = []
        position = 0
        for match in _BOUNDARY.finditer(self.buffer):
            event = self.buffer[position : match.end()]
            position = match.end()
            if self._keep(event):
                if self.done and not self.strip_usage and not self.exchange.usage:
                    kept.append(self._made_up_usage())
                kept.append(event)
        self.buffer = self.buffer[position:]
        return b"".join(kept)

    def _keep(self, event: bytes) -> bool:
        if b"[DONE]" in event:
            self.done = True
            return True
        if self.first is None:
            parsed = _event_json(event)
            self.first = parsed if isinstance(parsed, dict) else {}
        if b'"usage"' not in event:
            self.exchange.chunks += b'"choices"' in event
            return True
        data = _event_json(event)
        usage = data.get("usage") if isinstance(data, dict) else None
        if isinstance(usage, dict):
            self.exchange.usage = usage
        choices = data.get("choices") if isinstance(data, dict) else None
        if choices:
            self.exchange.chunks += 1
            return True
        return not (self.strip_usage and isinstance(usage, dict))

    def _made_up_usage(self) -> bytes:
        completion = self.exchange.chunks
        first = self.first or {}
        chunk = {
            "id": first.get("id", "gpufleet-usage"),
            "object": first.get("object", "chat.completion.chunk"),
            "created": first.get("created", 0),
            "model": first.get("model", ""),
            "choices": [],
            "usage": {"prompt_tokens": 0, "completion_tokens": completion,
                      "total_tokens": completion},
            "x_gpufleet_estimated": True,
        }  # fmt: skip
        self.exchange.usage = {"completion_tokens": completion}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _event_json(event: bytes) -> Any:
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None


def error_event(message: str) -> bytes:
    error = {"message": message, "type": "api_error", "param": None, "code": "upstream_error"}
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


async def forward(
    client: aiohttp.ClientSession,
    backend: Backend,
    path: str,
    body: bytes,
    send: Send,
    exchange: Exchange,
    strip_usage: bool = False,
) -> None:
    """Send ``body`` to ``backend`` and its answer to the client (see the module doc)."""
    try:
        response = await client.post(backend.base_url + path, data=body, headers=_HEADERS)
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamFailed(f"cannot reach {backend.node}:{backend.port}: {exc!r}") from exc
    done = False
    try:
        if response.status >= 500:
            text = (await response.read())[:300].decode("utf-8", "replace")
            raise UpstreamFailed(f"HTTP {response.status} from the backend: {text}")
        exchange.status = response.status
        if response.content_type == "text/event-stream":
            await _stream(response, send, exchange, strip_usage)
        else:
            await _whole(response, send, exchange)
        done = True
    finally:
        if done:
            response.release()  # the connection goes back to the pool
        else:
            response.close()  # cancelled or failed: the backend sees the connection close


_HEADERS = {"content-type": "application/json", "accept": "*/*"}


async def _whole(response: aiohttp.ClientResponse, send: Send, exchange: Exchange) -> None:
    try:
        data = await response.read()
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamFailed(f"the backend's answer broke off: {exc!r}") from exc
    exchange.first_byte = time.monotonic()
    if response.status < 400 and b'"usage"' in data:
        parsed = _loads(data)
        usage = parsed.get("usage") if isinstance(parsed, dict) else None
        exchange.usage = usage if isinstance(usage, dict) else {}
    headers = [
        (name, value) for name, value in response.raw_headers if name.lower() in PASSED_HEADERS
    ]
    headers.append((b"content-length", str(len(data)).encode()))
    exchange.started = True
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


async def _stream(
    response: aiohttp.ClientResponse, send: Send, exchange: Exchange, strip_usage: bool
) -> None:
    exchange.started = True
    await send({"type": "http.response.start", "status": response.status,
                "headers": SSE_HEADERS})  # fmt: skip
    scanner = SseScanner(exchange, strip_usage)
    failure = ""
    try:
        async for chunk in response.content.iter_any():
            out = scanner.feed(chunk)
            if out:
                if exchange.first_byte is None:
                    exchange.first_byte = time.monotonic()
                await send({"type": "http.response.body", "body": out, "more_body": True})
    except (aiohttp.ClientError, OSError) as exc:
        failure = f"The backend's stream broke off: {exc!r}"
    if not failure and not scanner.done:
        failure = "The backend's stream ended before [DONE]."
    tail = scanner.buffer
    if failure:
        exchange.status = 502
        tail = error_event(failure)
    await send({"type": "http.response.body", "body": tail, "more_body": False})
