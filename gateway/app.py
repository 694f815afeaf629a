"""The OpenAI-compatible gateway: a plain ASGI app for ``/v1`` (no Django view,
middleware or database query per request).

    GET  /v1/models                 the served names this key may use
    POST /v1/chat/completions       ┐
    POST /v1/completions            │ forwarded to a running instance of ``model``
    POST /v1/embeddings             │ (least requests in flight), started on demand
    POST /v1/rerank                 ┘

Per request: key from memory (``keys``), body read up to ``GPUFLEET_GATEWAY_MAX_BODY``,
JSON checked, route from memory (``table``), an instance now or after a cold start
(``ondemand``), then the answer streamed back (``proxy``). Usage is counted in memory
and written in batches (``usage``). Mounted by ``config.asgi`` beside the dashboard, or
run alone: ``uvicorn gateway.asgi:application``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
from django.conf import settings

from core import events
from gateway import asgi_io, feed, keys, ondemand, proxy, usage
from gateway.asgi_io import Receive, Scope, Send
from gateway.errors import GatewayError, bad_request
from gateway.table import Route, Table

logger = logging.getLogger("gpufleet.gateway")
COLD_POLL = 0.05  # seconds between route reads while requests wait for a cold start
FORWARDED = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
    "/v1/rerank": "rerank",
}
# The deployment kind each path serves, and the path to use for each kind.
KIND_OF_PATH = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "chat",
    "/v1/embeddings": "embedding",
    "/v1/rerank": "reranker",
}
PATHS_OF_KIND = {
    "chat": "/v1/chat/completions or /v1/completions",
    "embedding": "/v1/embeddings",
    "reranker": "/v1/rerank",
}


def _db(function: Any, *args: Any) -> Any:
    """Database work off the request path, in a thread, with a fresh connection."""
    return events.in_thread(function, *args)


def _demand(deployment_id: str, wanted: int) -> bool:
    from scheduling.actions import do_demand

    return do_demand(deployment_id, wanted)


class Gateway:
    """``live``: follow the scheduler's events and write usage (False in unit tests, which
    fill the table and the key cache themselves)."""

    def __init__(self, live: bool = True) -> None:
        self.live = live
        self.table = Table()
        self.keys = keys.KeyCache()
        self.usage = usage.Usage()
        self.ondemand = ondemand.OnDemand(
            self.table,
            lambda d, n: _db(_demand, d, n),
            self._watch_cold_starts,
            self._reload_after_demand,
        )
        self._watcher: asyncio.Task[None] | None = None
        self.feed = feed.Feed(self.reload_routes, self.reload_keys)
        self.client: aiohttp.ClientSession | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._waited: set[str] = set()  # deployments with requests held at the last flush

    # --- background ---------------------------------------------------------------------

    async def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is loop:
            return
        if self._starting is None or self._starting._loop is not loop:  # type: ignore[attr-defined]
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.loop is loop:
                return
            await self._start()
            self.loop = loop

    async def _start(self) -> None:
        # No overall or read timeout: a stream lasts as long as the model generates.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0)
        self.client = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trust_env=False
        )
        if not self.live:
            return
        await self.reload_keys()
        await self.reload_routes()
        self.feed.start()
        self._tasks = [asyncio.get_running_loop().create_task(self._flush_forever())]

    async def reload_routes(self) -> None:
        self.table.replace(await _db(feed.load_routes))
        self.ondemand.wake()

    async def reload_keys(self) -> None:
        self.keys.replace(await _db(keys.load_keys))

    async def _reload_after_demand(self) -> None:
        if self.live:
            await self.feed.safely(self.reload_routes)

    def _watch_cold_starts(self) -> None:
        """While requests wait for an instance, read the routes every ``COLD_POLL`` s
        instead of waiting for the event relay (one query per tick, only then)."""
        if self.live and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.get_running_loop().create_task(self._poll_while_waiting())

    async def _poll_while_waiting(self) -> None:
        while self.ondemand.queues:
            await asyncio.sleep(COLD_POLL)
            await self.feed.safely(self.reload_routes)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(usage.FLUSH)
            await self.flush()

    def _waiting(self) -> dict[str, int]:
        """Requests held per deployment id, with 0 for those whose queue just emptied."""
        now = {
            route.deployment_id: self.ondemand.waiting(name)
            for name, route in self.table.routes.items()
            if self.ondemand.waiting(name)
        }
        changes = {d: 0 for d in self._waited if d not in now} | now
        self._waited = set(now)
        return changes

    async def flush(self) -> None:
        batch = self.usage.take()
        try:
            await _db(usage.flush, batch, self.table.busy_instances(), self._waiting())
        except Exception:
            logger.exception("gateway: writing usage failed; it is counted again next time")
            for outcome_key, counts in batch.counts.items():  # keep it for the next flush
                self.usage.counts.setdefault(outcome_key, counts)

    async def stop(self) -> None:
        self.feed.stop()
        if self._watcher is not None:
            self._watcher.cancel()
        for task in self._tasks:
            task.cancel()
        await self.flush()
        if self.client is not None:
            await self.client.close()
        self.loop = None

    # --- requests -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = False

        async def tracked(message: asgi_io.Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.ensure_started()
            await self._handle(scope, receive, tracked)
        except GatewayError as error:
            if not started:
                await asgi_io.send_error(send, error)
        except asgi_io.Disconnected:
            return
        except Exception:  # a bug: the client still gets an answer in OpenAI's shape
            logger.exception("gateway: %s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                failed = GatewayError(500, "The gateway failed; the error is in its log.")
                await asgi_io.send_error(send, failed)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.ensure_started()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"].rstrip("/"), scope["method"]
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if method != "GET":
                raise GatewayError(405, f"{method} is not allowed on {path}.")
            info = await self._key(scope)
            await self._models(send, info, path.removeprefix("/v1/models").lstrip("/"))
            return
        if path not in FORWARDED:
            raise GatewayError(404, f"Unknown path {path}.", code="unknown_url")
        if method != "POST":
            raise GatewayError(405, f"{method} is not allowed on {path}: use POST.")
        info = await self._key(scope)
        body = await asgi_io.read_body(receive, settings.GPUFLEET_GATEWAY_MAX_BODY)
        await self._inference(path, info, body, receive, send)

    async def _key(self, scope: Scope) -> keys.KeyInfo:
        raw = keys.bearer(scope.get("headers", []))
        found = self.keys.lookup(raw)
        if found is None and raw and self.live and self.keys.may_reload_for_miss():
            await self.reload_keys()  # created a moment ago in another process?
            found = self.keys.lookup(raw)
        return self.keys.check(found)

    async def _models(self, send: Send, info: keys.KeyInfo, name: str) -> None:
        routes = [r for r in self.table.routes.values() if info.allows(r.served_name)]
        data = [
            {
                "id": r.served_name, "object": "model", "created": 0, "owned_by": "gpufleet",
                "kind": r.kind,
            }
            for r in sorted(routes, key=lambda r: r.served_name)
        ]  # fmt: skip
        if not name:
            await asgi_io.send_json(send, 200, {"object": "list", "data": data})
            return
        for entry in data:
            if entry["id"] == name:
                await asgi_io.send_json(send, 200, entry)
                return
        raise self._unknown(name, info)

    def _unknown(self, name: str, info: keys.KeyInfo) -> GatewayError:
        served = [n for n in self.table.names() if info.allows(n)]
        listing = ", ".join(served[:50]) or "none"
        return GatewayError(
            404, f"The model {name!r} does not exist. Served: {listing}.",
            code="model_not_found", param="model",
        )  # fmt: skip

    async def _inference(
        self, path: str, info: keys.KeyInfo, body: bytes, receive: Receive, send: Send
    ) -> None:
        request = parse_request(body)
        name = request["model"]
        route = self.table.get(name)
        if route is None:
            raise self._unknown(name, info)
        if not info.allows(name):
            raise GatewayError(
                403, f"This key may not use {name!r}.", code="model_not_allowed", param="model"
            )
        check_kind(route, path)
        wants_usage, body = usage_options(request, body)
        outcome = usage.Outcome(info.id, route.deployment_id, name, status=0)
        try:
            await self._serve(route, path, body, not wants_usage, receive, send, outcome)
        except GatewayError as error:
            outcome.status = error.status
            raise
        finally:
            self.usage.record(outcome)

    async def _serve(
        self, route: Route, path: str, body: bytes, strip_usage: bool,
        receive: Receive, send: Send, outcome: usage.Outcome,
    ) -> None:  # fmt: skip
        arrived = time.monotonic()
        cold = not route.routable()
        tried: tuple[str, ...] = ()
        failure = ""
        for _ in range(2):
            backend, waited = await self.ondemand.backend(route, tried)
            outcome.queue_wait += waited
            if cold and waited:
                outcome.cold_start = waited
            tried += (backend.instance_id,)
            exchange = proxy.Exchange()
            self.table.begin(backend)
            self.usage.used(backend.instance_id)
            try:
                work = proxy.forward(self.client, backend, path, body, send, exchange, strip_usage)  # type: ignore[arg-type]
                finished = await asgi_io.until_disconnect(receive, work)
            except proxy.UpstreamFailed as exc:
                failure = str(exc)
                self._report(backend, failure)
                if len(route.routable()) <= 1:
                    break  # no other instance to try
                continue
            finally:
                self.table.end(backend)
                self.usage.used(backend.instance_id)
            outcome.status = exchange.status if finished else 499
            outcome.prompt_tokens = exchange.prompt_tokens
            outcome.completion_tokens = exchange.completion_tokens
            if exchange.first_byte is not None:
                outcome.ttft = exchange.first_byte - arrived
            return
        raise GatewayError(502, f"The backend failed: {failure}", code="upstream_error")

    def _report(self, backend: Any, failure: str) -> None:
        self.table.suspect(backend)
        logger.warning("gateway: instance %s failed a request: %s", backend.instance_id, failure)
        if not self.live:
            return
        task = asyncio.get_running_loop().create_task(
            _db(_note_failure, backend.instance_id, failure)
        )
        self.ondemand.tasks.add(task)
        task.add_done_callback(self.ondemand.tasks.discard)


def _note_failure(instance_id: str, failure: str) -> None:
    from scheduling.lifecycle import do_note_gateway_failure

    do_note_gateway_failure(instance_id, failure)


def check_kind(route: Route, path: str) -> None:
    """400 when the model does not serve this path (a chat model asked for embeddings)."""
    if KIND_OF_PATH[path] == route.kind:
        return
    use = PATHS_OF_KIND.get(route.kind, "another endpoint")
    raise GatewayError(
        400, f"{route.served_name!r} is a {route.kind} model: use {use}.",
        code="wrong_model_kind", param="model",
    )  # fmt: skip


def parse_request(body: bytes) -> dict[str, Any]:
    """The request as JSON with a usable ``model``; 400 naming the field otherwise."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("The body is nested too deeply.") from None
    if not isinstance(request, dict):
        raise bad_request("The body must be a JSON object.")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required: a served name (GET /v1/models).", "model")
    if "stream" in request and not isinstance(request["stream"], bool):
        raise bad_request("'stream' must be true or false.", "stream")
    options = request.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", "stream_options")
    return request


def usage_options(request: dict[str, Any], body: bytes) -> tuple[bool, bytes]:
    """Whether the client asked for a stream's usage; the body the backend gets, which
    always asks for it (the gateway counts tokens), so it is dropped again if unasked."""
    if not request.get("stream"):
        return True, body
    options = request.get("stream_options") or {}
    if options.get("include_usage") is True:
        return True, body
    request["stream_options"] = {**options, "include_usage": True}
    return False, json.dumps(request).encode()


gateway = Gateway()
