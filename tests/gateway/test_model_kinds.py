"""Each deployment kind answers on its own paths: chat models on chat and completions,
embedding models on /v1/embeddings, rerankers on /v1/rerank; another path gets a 400
that names the right one, before any backend is asked."""

from __future__ import annotations

import json

import pytest

from gateway.app import Gateway
from gateway.keys import KeyInfo
from gateway.models import key_digest
from gateway.table import Backend, Route

RAW_KEY = "gfk_kind-key"


def _gateway(*routes: Route) -> Gateway:
    gateway = Gateway(live=False)
    gateway.keys.replace({key_digest(RAW_KEY): KeyInfo("k1", "test", frozenset(), None)})
    gateway.table.replace(routes)
    return gateway


def _route(name: str, kind: str, port: int = 1) -> Route:
    backend = Backend(f"{name}-i1", "running", "127.0.0.1", port)
    return Route(
        deployment_id=f"d-{name}", served_name=name, running=True, priority=50, replicas=1,
        min_replicas=1, max_queue=4, cold_start_timeout=5.0, backends=(backend,), kind=kind,
    )  # fmt: skip


async def _call(gateway: Gateway, method: str, path: str, body: dict | None = None):
    messages: list[dict] = []
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            data = json.dumps(body).encode() if body is not None else b""
            return {"type": "http.request", "body": data, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {
        "type": "http", "method": method, "path": path,
        "headers": [(b"authorization", b"Bearer " + RAW_KEY.encode())],
    }  # fmt: skip
    await gateway(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    text = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return status, json.loads(text)


@pytest.mark.parametrize(
    ("name", "path", "use"),
    [
        ("embed", "/v1/chat/completions", "/v1/embeddings"),
        ("embed", "/v1/rerank", "/v1/embeddings"),
        ("chat", "/v1/embeddings", "/v1/chat/completions or /v1/completions"),
        ("chat", "/v1/rerank", "/v1/chat/completions or /v1/completions"),
        ("rank", "/v1/completions", "/v1/rerank"),
        ("rank", "/v1/embeddings", "/v1/rerank"),
    ],
)
async def test_a_model_asked_on_another_kinds_path_gets_400_naming_its_own(name, path, use):
    gateway = _gateway(
        _route("embed", "embedding"), _route("chat", "chat"), _route("rank", "reranker")
    )
    status, body = await _call(gateway, "POST", path, {"model": name, "input": "x"})
    assert status == 400
    assert body["error"]["code"] == "wrong_model_kind" and body["error"]["param"] == "model"
    assert use in body["error"]["message"]
    await gateway.stop()


async def test_the_model_list_says_each_models_kind():
    gateway = _gateway(
        _route("embed", "embedding"), _route("chat", "chat"), _route("rank", "reranker")
    )
    status, body = await _call(gateway, "GET", "/v1/models")
    assert status == 200
    assert {m["id"]: m["kind"] for m in body["data"]} == {
        "chat": "chat", "embed": "embedding", "rank": "reranker",
    }  # fmt: skip
    await gateway.stop()
