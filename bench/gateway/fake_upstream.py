"""A fake OpenAI-compatible upstream that streams tokens at a fixed rate.

It stands in for a llama.cpp backend in the gateway benchmark, so that the model is not
the noise: every answer takes exactly the same time and costs almost no CPU.

- ``POST /v1/chat/completions`` and ``POST /v1/completions`` with ``"stream": true``
  answer ``text/event-stream`` (HTTP/1.1 chunked): N chunks in OpenAI's
  ``chat.completion.chunk`` (or ``text_completion``) shape, chunk *i* at
  ``start + i × interval`` (so the first token comes one interval after the request and
  the rate does not drift), each ``data: {json}\\n\\n`` with one token of content; the
  first also carries ``role``, the last ``finish_reason: "length"``. Then, if the
  request has ``stream_options.include_usage``, a chunk with ``choices: []`` and
  ``usage``; then ``data: [DONE]\\n\\n``.
- Without ``stream`` they answer one ``chat.completion`` (``text_completion``) JSON with
  ``usage`` after N × interval.
- ``GET /v1/models`` lists one model (``--model``, default ``bench``); ``GET /health``
  answers ``{"status": "ok"}``.

N is ``--tokens``, or the request's ``max_tokens`` (``max_completion_tokens``) when that
is smaller. Only the standard library's asyncio: a minimal HTTP/1.1 server with
keep-alive and ``Content-Length`` request bodies (no chunked request bodies). One
timer per stream, no JSON encoding per token (each request's chunks are encoded once),
so 64 streams at 100 tokens/s each cost a few % of one core.

Run::

    .venv/bin/python bench/gateway/fake_upstream.py --port 8101 --tokens 64 --interval 10

It prints ``listening on 127.0.0.1:PORT`` once it accepts connections. From Python::

    from fake_upstream import start
    upstream = start(port=0, tokens=64, interval_ms=10)  # a thread with its own loop
    ...  # http://127.0.0.1:{upstream.port}/v1
    upstream.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

MAX_HEADER = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
TOKEN = " tok"
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
}


@dataclass(frozen=True)
class Config:
    tokens: int = 64
    interval: float = 0.010  # seconds between tokens
    model: str = "bench"


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_ids = itertools.count(1)


def _sse_chunk(payload: dict[str, Any] | str) -> bytes:
    """One SSE event framed as one HTTP/1.1 chunk."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    event = b"data: " + text.encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _prompt_tokens(body: dict[str, Any]) -> int:
    """A rough count (words), enough for usage figures to be plausible."""
    if "messages" in body:
        messages = body.get("messages") or []
        text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    else:
        text = str(body.get("prompt", ""))
    return max(1, len(text.split()))


def _token_count(body: dict[str, Any], config: Config) -> int:
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(limit, int) and 0 < limit < config.tokens:
        return limit
    return config.tokens


class Completion:
    """The pre-encoded chunks of one answer."""

    def __init__(self, body: dict[str, Any], chat: bool, config: Config) -> None:
        self.chat = chat
        self.count = _token_count(body, config)
        self.prompt_tokens = _prompt_tokens(body)
        self.model = str(body.get("model") or config.model)
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-fake{next(_ids)}"
        self.created = int(time.time())
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def _head(self) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _choice(self, first: bool, finish: str | None) -> dict[str, Any]:
        if self.chat:
            delta = {"role": "assistant", "content": TOKEN} if first else {"content": TOKEN}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": TOKEN, "logprobs": None, "finish_reason": finish}

    def chunks(self) -> list[bytes]:
        """The ``count`` token chunks (identical objects in the middle, not re-encoded)."""
        n = self.count
        if n == 1:
            return [_sse_chunk(self._head() | {"choices": [self._choice(True, "length")]})]
        first = _sse_chunk(self._head() | {"choices": [self._choice(True, None)]})
        middle = _sse_chunk(self._head() | {"choices": [self._choice(False, None)]})
        last = _sse_chunk(self._head() | {"choices": [self._choice(False, "length")]})
        return [first, *([middle] * (n - 2)), last]

    def tail(self) -> bytes:
        parts = []
        if self.include_usage:
            usage = _usage(self.prompt_tokens, self.count)
            parts.append(_sse_chunk(self._head() | {"choices": [], "usage": usage}))
        parts.append(_sse_chunk("[DONE]"))
        parts.append(b"0\r\n\r\n")
        return b"".join(parts)

    def whole(self) -> dict[str, Any]:
        text = TOKEN * self.count
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "length"}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
            kind = "text_completion"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": _usage(self.prompt_tokens, self.count),
        }


def _head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json_response(status: int, payload: Any, keep_alive: bool) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "keep-alive" if keep_alive else "close"),
    ]
    return _head_bytes(status, headers) + body


def _error(status: int, message: str, keep_alive: bool) -> bytes:
    payload = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    return _json_response(status, payload, keep_alive)


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes, bool] | None:
    """(method, path, headers, body, keep_alive), or None at a clean end of connection."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest(400, "incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(400, "request head too large") from None
    lines = raw.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest(400, "bad request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "bad header line")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    http11 = version == "HTTP/1.1"
    keep_alive = "close" not in connection if http11 else "keep-alive" in connection
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadRequest(411, "chunked request bodies are not supported")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest(400, "bad Content-Length") from None
    if length < 0 or length > MAX_BODY:
        raise BadRequest(413, "request body too large")
    body = await reader.readexactly(length) if length else b""
    return method.upper(), target.split("?", 1)[0], headers, body, keep_alive


async def _stream(writer: asyncio.StreamWriter, completion: Completion, config: Config) -> None:
    headers = [
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive"),
    ]
    writer.write(_head_bytes(200, headers))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i, chunk in enumerate(completion.chunks(), start=1):
        delay = start + i * config.interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if writer.transport.is_closing():
            raise ConnectionResetError("the client went away")
        writer.write(chunk)
        if writer.transport.get_write_buffer_size() > 64 * 1024:
            await writer.drain()
    writer.write(completion.tail())
    await writer.drain()


async def _handle(
    method: str,
    path: str,
    body: bytes,
    keep_alive: bool,
    writer: asyncio.StreamWriter,
    config: Config,
) -> None:
    if path in ("/v1/models", "/models"):
        if method != "GET":
            writer.write(_error(405, "use GET", keep_alive))
            return
        model = {"id": config.model, "object": "model", "created": 0, "owned_by": "fake"}
        writer.write(_json_response(200, {"object": "list", "data": [model]}, keep_alive))
        return
    if path == "/health":
        writer.write(_json_response(200, {"status": "ok"}, keep_alive))
        return
    chat = path in ("/v1/chat/completions", "/chat/completions")
    if not chat and path not in ("/v1/completions", "/completions"):
        writer.write(_error(404, f"no route {path}", keep_alive))
        return
    if method != "POST":
        writer.write(_error(405, "use POST", keep_alive))
        return
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        writer.write(_error(400, "the body is not JSON", keep_alive))
        return
    if not isinstance(request, dict):
        writer.write(_error(400, "the body is not a JSON object", keep_alive))
        return
    completion = Completion(request, chat, config)
    if request.get("stream"):
        await _stream(writer, completion, config)
    else:
        await asyncio.sleep(completion.count * config.interval)
        writer.write(_json_response(200, completion.whole(), keep_alive))


async def _connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, config: Config
) -> None:
    try:
        while True:
            try:
                request = await _read_request(reader)
            except BadRequest as exc:
                writer.write(_error(exc.status, str(exc), False))
                await writer.drain()
                return
            if request is None:
                return
            method, path, _headers, body, keep_alive = request
            await _handle(method, path, body, keep_alive, writer, config)
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the client went away mid-request or mid-stream
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(host: str, port: int, config: Config) -> asyncio.Server:
    """Start listening (port 0: any free port) and return the server."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # cancelled when the loop shuts down with keep-alive connections still open
        with contextlib.suppress(asyncio.CancelledError):
            await _connection(reader, writer, config)

    return await asyncio.start_server(on_connect, host, port, limit=MAX_HEADER, backlog=1024)


class Handle:
    """A fake upstream running in a thread of this process, with its own event loop."""

    def __init__(self, host: str, port: int, config: Config) -> None:
        self.host = host
        self.port = port
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(serve(self.host, self.port, self.config))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def stop(self) -> None:
        if self._server is None or self._loop.is_closed():
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(close(), self._loop)
        self._thread.join(timeout=10)


def start(
    port: int = 0,
    tokens: int = 64,
    interval_ms: float = 10.0,
    model: str = "bench",
    host: str = "127.0.0.1",
) -> Handle:
    """Start a fake upstream in a background thread; ``.port`` is the port it listens on
    (useful with ``port=0``), ``.stop()`` stops it."""
    return Handle(host, port, Config(tokens, interval_ms / 1000, model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101, help="0: any free port")
    parser.add_argument("--tokens", type=int, default=64, help="token chunks per answer")
    parser.add_argument("--interval", type=float, default=10.0, help="ms between tokens")
    parser.add_argument("--model", default="bench", help="the model /v1/models lists")
    args = parser.parse_args()
    if args.tokens < 1 or args.interval < 0:
        parser.error("--tokens must be at least 1 and --interval not negative")
    config = Config(args.tokens, args.interval / 1000, args.model)

    async def run() -> None:
        server = await serve(args.host, args.port, config)
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {args.host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
