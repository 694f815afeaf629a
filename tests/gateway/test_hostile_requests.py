"""Hostile and malformed requests to the gateway never get a 500 or a traceback: every
answer is a 4xx/5xx the gateway chose, in OpenAI's error shape."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import Gateway
from gateway.keys import KeyInfo
from gateway.models import key_digest
from gateway.table import Route

RAW_KEY = "gfk_fuzz"
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
         "/v1/models/m", "/v1/rerank", "/v1/other", "/v1/../admin", "/v1/%00"]  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
REQUESTS = st.fixed_dictionaries(
    {"model": st.one_of(st.just("m"), st.just("unknown"), JSON_VALUES)},
    optional={"stream": JSON_VALUES, "stream_options": JSON_VALUES, "messages": JSON_VALUES},
)
BODIES = st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    REQUESTS.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
)


def _gateway() -> Gateway:
    gateway = Gateway(live=False)
    gateway.keys.replace({key_digest(RAW_KEY): KeyInfo("k", "fuzz", frozenset({"m"}), None)})
    stopped = Route(
        deployment_id="d", served_name="m", running=False, priority=50, replicas=1,
        min_replicas=0, max_queue=0, cold_start_timeout=0.1, backends=(),
    )  # fmt: skip
    gateway.table.replace([stopped])
    return gateway


async def _call(gateway: Gateway, method: str, path: str, body: bytes, auth: bytes) -> list:
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body[:100], "more_body": len(body) > 100},
              {"type": "http.request", "body": body[100:], "more_body": False}]  # fmt: skip

    async def receive() -> dict:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"authorization", auth)] if auth else []}  # fmt: skip
    try:
        await asyncio.wait_for(gateway(scope, receive, send), 5)
    finally:
        await gateway.stop()
    return sent


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.sampled_from(PATHS),
    body=BODIES,
    auth=st.sampled_from(
        [
            b"Bearer " + RAW_KEY.encode(),
            b"Bearer gfk_wrong",
            b"Basic x",
            b"",
            b"Bearer \xff\xfe",
            b"bearer " + RAW_KEY.encode(),
        ]
    ),
)
def test_no_request_gets_a_500_or_an_answer_outside_openais_shape(method, path, body, auth):
    gateway = _gateway()
    sent = asyncio.run(_call(gateway, method, path, body, auth))
    start = next(m for m in sent if m["type"] == "http.response.start")
    status = start["status"]
    assert status in {200, 400, 401, 403, 404, 405, 413, 503}, status
    if status >= 400:
        payload = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
        assert set(payload["error"]) == {"message", "type", "param", "code"}
