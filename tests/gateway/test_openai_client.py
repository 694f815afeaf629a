"""The official ``openai`` client against gpufleet's own address (``/v1`` on the web
process), with real processes (web, agent, qcluster) and real llama.cpp backends of a
tiny generated model on a simulated GPU: models list, chat, streaming chat with usage,
completions, errors as the client's exception classes, a scale-to-zero deployment that
cold-starts on its first request and is released when idle, and the queue limit."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.stack import Stack
from tests.gateway.stacks import MODES, node_stack, wait

NODE = f"node-gw-{uuid.uuid4().hex[:6]}"

SETUP = """
import json
from pathlib import Path
from gguf import GGMLQuantizationType as Q
from inventory.models import Node
from models_app.catalog import add_path_model
from devtools.tiny_gguf import write_tiny_model
from scheduling import actions
from gateway.models import InferenceKey
node = Node.objects.get(name={node!r})
root = Path({root!r}); root.mkdir(parents=True, exist_ok=True)
(path,) = write_tiny_model(root / "tiny.gguf", header_only=False, n_layer=2, n_embd=64,
    n_head=4, n_head_kv=2, n_ff=128, n_ctx_train=2048, weight_type=Q.Q8_0)
model = add_path_model(node, str(path))
actions.do_create_deployment(model=model, served_name="tiny-chat", n_ctx=512)
actions.do_create_deployment(model=model, served_name="tiny-cold", n_ctx=512, replicas=1,
    min_replicas=0, idle_timeout=6, max_queue=32, cold_start_timeout=120)
actions.do_create_deployment(model=model, served_name="tiny-narrow", n_ctx=512, replicas=1,
    min_replicas=0, idle_timeout=600, max_queue=1, cold_start_timeout=120)
(embed,) = write_tiny_model(root / "embed.gguf", arch="bert", pooling="mean", n_ctx_train=512)
(rank,) = write_tiny_model(root / "rank.gguf", arch="bert", pooling="rank", n_ctx_train=512)
actions.do_create_deployment(model=add_path_model(node, str(embed)), served_name="tiny-embed",
    n_ctx=512, parallel=2)
actions.do_create_deployment(model=add_path_model(node, str(rank)), served_name="tiny-rank",
    n_ctx=512, parallel=2)
_, every = InferenceKey.issue("every model")
_, cold_only = InferenceKey.issue("cold only", served_names=["tiny-cold"])
print(json.dumps({{"every": every, "cold_only": cold_only}}))
"""

PHASES = """
import json
from scheduling.models import InstanceRun
run = InstanceRun.objects.filter(instance__deployment__served_name="tiny-cold").first()
print(json.dumps(run.phases))
"""

STATES = """
import json
from scheduling.models import Instance
rows = Instance.objects.filter(deployment__served_name={name!r}).exclude(state="stopped")
print(json.dumps([[str(i.pk), i.state, i.claims.count()] for i in rows]))
"""


@pytest.fixture(scope="module", params=MODES)
def stack(request, tmp_path_factory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("gateway-stack")
    env = {
        "GPUFLEET_SIMULATED_GPUS": "1xL4", "GPUFLEET_BACKEND_PORTS": "39600-39699",
        "GPUFLEET_EVENT_POLL": "0.1", "GPUFLEET_GATEWAY_MAX_BODY": "64KiB",
    }  # fmt: skip
    with node_stack(state, request.param, NODE, **env) as stack:
        out = stack.manage("shell", "-c", SETUP.format(node=NODE, root=str(state / "models")))
        stack.keys = json.loads(out.strip().splitlines()[-1])  # type: ignore[attr-defined]
        for name in ("tiny-chat", "tiny-embed", "tiny-rank"):
            _wait(lambda n=name: _states(stack, n) == ["running"], 120, f"{name} runs")
        yield stack


_wait = wait


def _rows(stack: Stack, name: str) -> list[list]:
    return json.loads(
        stack.manage("shell", "-c", STATES.format(name=name)).strip().splitlines()[-1]
    )


def _states(stack: Stack, name: str) -> list[str]:
    return [row[1] for row in _rows(stack, name)]


def _client(stack: Stack, key: str | None = None) -> openai.OpenAI:
    key = key if key is not None else stack.keys["every"]  # type: ignore[attr-defined]
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_the_models_list_names_the_deployments(stack: Stack):
    names = sorted(model.id for model in _client(stack).models.list())
    assert names == ["tiny-chat", "tiny-cold", "tiny-embed", "tiny-narrow", "tiny-rank"]
    only = _client(stack, stack.keys["cold_only"]).models.list()  # type: ignore[attr-defined]
    assert [model.id for model in only] == ["tiny-cold"]


def test_a_chat_completion_answers_with_usage(stack: Stack):
    answer = _client(stack).chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_a_streaming_chat_arrives_in_chunks_and_ends_with_the_usage_asked_for(stack: Stack):
    stream = _client(stack).chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "hello"}], max_tokens=8,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert len([c for c in chunks if c.choices]) >= 2
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_stream_without_include_usage_gets_no_usage_chunk(stack: Stack):
    stream = _client(stack).chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    )
    assert all(chunk.choices for chunk in stream)


def test_a_completion_answers(stack: Stack):
    answer = _client(stack).completions.create(model="tiny-chat", prompt="hello", max_tokens=4)
    assert isinstance(answer.choices[0].text, str)


def test_an_embedding_model_answers_embeddings_through_the_client(stack: Stack):
    answer = _client(stack).embeddings.create(model="tiny-embed", input=["hello", "world"])
    assert [item.index for item in answer.data] == [0, 1]
    assert all(len(item.embedding) == 64 for item in answer.data)
    assert answer.usage is not None and answer.usage.prompt_tokens > 0


def test_a_reranker_scores_each_document_through_v1_rerank(stack: Stack):
    headers = {"Authorization": f"Bearer {stack.keys['every']}"}  # type: ignore[attr-defined]
    body = {"model": "tiny-rank", "query": "a cat", "documents": ["cats", "dogs", "tea"]}
    answer = httpx.post(stack.url + "/v1/rerank", json=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert all(isinstance(r["relevance_score"], float) for r in results)


def test_a_model_asked_for_the_wrong_kind_of_answer_is_a_bad_request(stack: Stack):
    with pytest.raises(openai.BadRequestError, match="/v1/embeddings"):
        _client(stack).chat.completions.create(
            model="tiny-embed", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    with pytest.raises(openai.BadRequestError, match="chat/completions"):
        _client(stack).embeddings.create(model="tiny-chat", input="hello")


def test_errors_raise_the_client_exception_classes(stack: Stack):
    with pytest.raises(openai.AuthenticationError):
        _client(stack, "gfk_not-a-key").models.list()
    with pytest.raises(openai.AuthenticationError):
        _client(stack, "gpf_a-rest-api-token").models.list()
    with pytest.raises(openai.NotFoundError, match="tiny-chat"):
        _client(stack).completions.create(model="nope", prompt="x", max_tokens=1)
    with pytest.raises(openai.PermissionDeniedError):
        only = _client(stack, stack.keys["cold_only"])  # type: ignore[attr-defined]
        only.completions.create(model="tiny-chat", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError):
        _client(stack).completions.create(model="", prompt="x", max_tokens=1)


def test_bad_bodies_get_openai_shaped_errors(stack: Stack):
    headers = {"Authorization": f"Bearer {stack.keys['every']}"}  # type: ignore[attr-defined]
    url = stack.url + "/v1/chat/completions"
    bad = httpx.post(url, content=b"{not json", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    big = httpx.post(url, content=b"x" * 100_000, headers=headers)
    assert big.status_code == 413 and "larger" in big.json()["error"]["message"]
    anonymous = httpx.get(stack.url + "/v1/models")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"


def test_a_scale_to_zero_deployment_starts_on_its_first_request_and_is_released_when_idle(
    stack: Stack,
):
    assert _states(stack, "tiny-cold") == [], "nothing runs before the first request"
    client = _client(stack)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(
            pool.map(
                lambda _: client.completions.create(model="tiny-cold", prompt="a", max_tokens=2),
                range(20),
            )
        )
    assert len(answers) == 20 and all(isinstance(a.choices[0].text, str) for a in answers)
    assert _states(stack, "tiny-cold") == ["running"], "20 first requests start one instance"
    runs = json.loads(stack.manage("shell", "-c", PHASES).strip().splitlines()[-1])
    assert {"placement", "queue", "spawn", "load"} <= set(runs), "the start's phases"
    _wait(lambda: _rows(stack, "tiny-cold") == [], 60, "the idle instance is released")


def test_requests_beyond_the_queue_limit_get_429(stack: Stack):
    assert _rows(stack, "tiny-narrow") == []
    client = _client(stack)

    def ask(_: int) -> str:
        try:
            client.completions.create(model="tiny-narrow", prompt="a", max_tokens=2)
        except openai.RateLimitError:
            return "429"
        return "ok"

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(ask, range(5)))
    assert results.count("429") >= 1 and results.count("ok") >= 1, results


def test_the_gateway_is_not_the_rest_api(stack: Stack, tmp_path: Path):
    key = stack.keys["every"]  # type: ignore[attr-defined]
    answer = httpx.get(stack.url + "/api/v1/nodes", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 401


PORT = """
from scheduling.models import Instance
print(Instance.objects.get(deployment__served_name="tiny-chat", state="running").port)
"""


def _slots(port: int) -> list[dict]:
    return httpx.get(f"http://127.0.0.1:{port}/slots", timeout=10).json()


def test_a_client_that_disconnects_mid_stream_stops_the_backends_generation(stack: Stack):
    port = int(stack.manage("shell", "-c", PORT).strip().splitlines()[-1])
    stream = _client(stack).completions.create(
        model="tiny-chat", prompt="once upon a time", max_tokens=400, stream=True,
        logit_bias={"317": -100},  # no end-of-text token (317): it generates all 400
    )  # fmt: skip
    chunks = iter(stream)
    next(chunks), next(chunks)
    stream.close()
    _wait(
        lambda: not any(slot["is_processing"] for slot in _slots(port)),
        30, "the backend's slots are idle again",
    )  # fmt: skip
    decoded = [s["next_token"][0]["n_decoded"] for s in _slots(port) if "next_token" in s]
    assert decoded and max(decoded) < 400, f"generation was cut short: {decoded}"
