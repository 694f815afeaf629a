"""Generated embedding and reranker models (qwen3, bert) are real: llama.cpp loads them,
embeds and ranks with them (llama-cpp-python, and llama-server where it is built), and
the GGUF facts reader reads their pooling type and classifier outputs.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.tiny_gguf import (
    CHATML_TEMPLATE,
    TinyModelSpec,
    model_tensors,
    tiny_wordpiece_vocab,
    write_tiny_model,
)
from models_app.gguf import ModelFacts, load_model_facts
from scheduling import llama_server
from tests.conftest import skip_or_fail

N_EMBD = 64
BASE: dict[str, Any] = {"n_layer": 2, "n_embd": N_EMBD, "n_head": 4, "n_ctx_train": 512}
VARIANTS: dict[str, dict[str, Any]] = {
    "qwen3-chat": {"arch": "qwen3", "key_length": 32, "chat_template": CHATML_TEMPLATE},
    "qwen3-embedding": {"arch": "qwen3", "pooling": "last"},
    "qwen3-reranker": {"arch": "qwen3", "pooling": "rank", "n_cls_out": 2},
    "bert-embedding": {"arch": "bert", "pooling": "mean"},
    "bert-cls-embedding": {"arch": "bert", "pooling": "cls"},
    "bert-reranker": {"arch": "bert", "pooling": "rank"},
}
EMBEDDERS = {"qwen3-embedding": "last", "bert-embedding": "mean", "bert-cls-embedding": "cls"}
RERANKERS = {"qwen3-reranker": 2, "bert-reranker": 1}  # n_cls_out
DOCUMENTS = ["a cat sat on the mat", "stocks fell sharply", "hello world"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("embedding-models")
    paths = {}
    for name, fields in VARIANTS.items():
        (paths[name],) = write_tiny_model(folder / f"{name}.gguf", **BASE, **fields)
    return paths


def _tensors(**fields: Any) -> dict[str, tuple[int, ...]]:
    return {name: ne for name, ne, _ in model_tensors(TinyModelSpec(**BASE, **fields))}


# --- what the generator writes ----------------------------------------------------------


def test_qwen3_has_per_head_q_and_k_norms_and_no_qkv_biases() -> None:
    tensors = _tensors(**VARIANTS["qwen3-chat"])

    assert tensors["blk.0.attn_q_norm.weight"] == (32,)
    assert tensors["blk.1.attn_k_norm.weight"] == (32,)
    assert tensors["blk.0.attn_q.weight"] == (N_EMBD, 4 * 32)
    assert tensors["blk.0.attn_output.weight"] == (4 * 32, N_EMBD)
    assert not [name for name in tensors if name.endswith(("q.bias", "k.bias", "v.bias"))]
    assert not [name for name in tensors if name.startswith("cls")]


def test_a_qwen3_reranker_has_a_classifier_projection_of_n_cls_out_rows() -> None:
    tensors = _tensors(**VARIANTS["qwen3-reranker"])

    assert tensors["cls.output.weight"] == (N_EMBD, 2)
    assert "cls.weight" not in tensors


def test_bert_has_the_encoder_tensors_llama_cpp_loads() -> None:
    tensors = _tensors(**VARIANTS["bert-reranker"])

    assert tensors["token_types.weight"] == (N_EMBD, 2)
    assert tensors["position_embd.weight"] == (N_EMBD, 512)
    assert tensors["token_embd_norm.bias"] == (N_EMBD,)
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        assert tensors[f"blk.1.{name}.weight"] == (N_EMBD, N_EMBD)
        assert tensors[f"blk.1.{name}.bias"] == (N_EMBD,)
    assert tensors["blk.0.ffn_up.weight"] == (N_EMBD, 128)
    assert tensors["blk.0.layer_output_norm.bias"] == (N_EMBD,)
    assert tensors["cls.weight"] == (N_EMBD, N_EMBD)
    assert tensors["cls.output.weight"] == (N_EMBD, 1)
    assert tensors["cls.output.bias"] == (1,)
    assert "output.weight" not in tensors


def test_the_wordpiece_vocab_has_the_specials_then_word_starts_and_continuations() -> None:
    tokens = tiny_wordpiece_vocab(320)

    assert tokens[:7] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\u2581e", "e"]
    assert len(tokens) == len(set(tokens)) == 320


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pooling": "rank"}, "needs a classifier head"),
        ({"arch": "qwen3", "pooling": "max"}, "pooling must be one of"),
        ({"arch": "bert", "n_cls_out": 2}, "only with pooling 'rank'"),
        ({"arch": "bert", "n_vocab": 40}, "n_vocab must be at least 57"),
        ({"arch": "qwen3", "n_expert": 4, "n_expert_used": 2}, "no experts"),
    ],
)
def test_specs_llama_cpp_would_refuse_are_refused(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_tiny_model(tmp_path / "bad.gguf", **fields)


# --- the facts reader -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pooling", "n_cls_out"),
    [
        ("qwen3-chat", None, None),
        ("qwen3-embedding", "last", None),
        ("qwen3-reranker", "rank", 2),
        ("bert-embedding", "mean", None),
        ("bert-cls-embedding", "cls", None),
        ("bert-reranker", "rank", 1),
    ],
)
def test_facts_read_the_pooling_type_and_classifier_outputs(
    models: dict[str, Path], name: str, pooling: str | None, n_cls_out: int | None
) -> None:
    facts = load_model_facts(models[name])

    assert facts.architecture == VARIANTS[name]["arch"]
    assert facts.embedding_length == N_EMBD
    assert facts.pooling_type == pooling
    assert facts.n_cls_out == n_cls_out
    stored = json.loads(json.dumps(facts.to_dict(), allow_nan=False))
    assert ModelFacts.from_dict(stored) == facts


def test_facts_read_qwen3_head_sizes_and_bert_encoder_keys(models: dict[str, Path]) -> None:
    qwen3 = load_model_facts(models["qwen3-chat"])
    bert = load_model_facts(models["bert-embedding"])

    assert (qwen3.key_length, qwen3.value_length) == (32, 32)
    assert bert.metadata["bert.attention.causal"] is False
    assert bert.metadata["tokenizer.ggml.model"] == "bert"
    assert bert.vocab_size == 320
    assert bert.key_length == N_EMBD // 4


def test_facts_stored_before_pooling_was_read_still_load(models: dict[str, Path]) -> None:
    stored = load_model_facts(models["bert-reranker"]).to_dict()
    del stored["pooling_type"], stored["n_cls_out"]

    facts = ModelFacts.from_dict(stored)

    assert (facts.pooling_type, facts.n_cls_out) == (None, None)
    assert facts.architecture == "bert"


# --- llama-cpp-python -------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_cpp() -> Any:
    return pytest.importorskip("llama_cpp")


@contextmanager
def _loaded(llama_cpp: Any, path: Path, *, embedding: bool = True) -> Iterator[Any]:
    model = llama_cpp.Llama(model_path=str(path), embedding=embedding, n_ctx=256, verbose=False)
    try:
        yield model
    finally:
        model.close()


@pytest.mark.parametrize("name", EMBEDDERS)
def test_llama_cpp_embeds_with_the_embedding_models(
    llama_cpp: Any, models: dict[str, Path], name: str
) -> None:
    with _loaded(llama_cpp, models[name]) as model:
        vector = model.embed("hello world")
        pooling = model.pooling_type()

    assert pooling == ["none", "mean", "cls", "last", "rank"].index(EMBEDDERS[name])
    assert len(vector) == N_EMBD
    assert all(math.isfinite(value) for value in vector)


def test_llama_cpp_generates_with_the_qwen3_chat_model(
    llama_cpp: Any, models: dict[str, Path]
) -> None:
    with _loaded(llama_cpp, models["qwen3-chat"], embedding=False) as model:
        result = model("hello there", max_tokens=3)

    assert result["usage"]["completion_tokens"] >= 1


def _rank_scores(llama_cpp: Any, model: Any, text: str) -> list[float]:
    """The reranker's outputs for one sequence. ``Llama.embed`` would read ``n_embd``
    floats where llama.cpp returns ``n_cls_out``, so this decodes the way it does."""
    model._batch.reset()
    model._batch.add_sequence(model.tokenize(text.encode()), 0, True)
    model._ctx.kv_cache_clear()
    model._ctx.decode(model._batch)
    n_cls_out = llama_cpp.llama_model_n_cls_out(model.model)
    return list(llama_cpp.llama_get_embeddings_seq(model._ctx.ctx, 0)[:n_cls_out])


@pytest.mark.parametrize("name", RERANKERS)
def test_llama_cpp_scores_with_the_reranker_models(
    llama_cpp: Any, models: dict[str, Path], name: str
) -> None:
    with _loaded(llama_cpp, models[name]) as model:
        n_cls_out = llama_cpp.llama_model_n_cls_out(model.model)
        pooling = model.pooling_type()
        scores = _rank_scores(llama_cpp, model, "what is a cat? a cat sat on the mat")

    assert pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK
    assert n_cls_out == len(scores) == RERANKERS[name]
    assert all(math.isfinite(score) for score in scores)
    if name.startswith("qwen3"):  # llama.cpp softmaxes qwen3's yes/no outputs
        assert sum(scores) == pytest.approx(1.0, abs=1e-4)


# --- llama-server -----------------------------------------------------------------------


def _server_binary() -> Path:
    version = pytest.importorskip("llama_cpp").__version__
    cached = Path.home() / ".cache" / "gpufleet" / "llama-server" / f"cpu-{version}"
    for candidate in (llama_server.binary(), cached / "llama-server"):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    skip_or_fail("llama-server is not built (make install builds it beside the venv's python)")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _server(model: Path, log: Path, *flags: str, n_ctx: int = 512) -> Iterator[str]:
    port = _free_port()
    args = [str(_server_binary()), "-m", str(model), *flags, "-c", str(n_ctx), "-np", "2"]
    args += ["--fit", "off", "-fa", "off", "-t", "1", "--host", "127.0.0.1", "--port", str(port)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("LLAMA_ARG_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env | {"OMP_WAIT_POLICY": "passive"}
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama-server exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"llama-server not healthy after 60 s:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("name", EMBEDDERS)
def test_llama_server_serves_embeddings(models: dict[str, Path], tmp_path: Path, name: str) -> None:
    flags = ("--embedding", "--pooling", EMBEDDERS[name])
    with _server(models[name], tmp_path / "server.log", *flags) as url:
        body = {"input": ["hello world", "the cat"], "model": name}
        response = httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [len(item["embedding"]) for item in data] == [N_EMBD, N_EMBD]
    assert all(math.isfinite(value) for item in data for value in item["embedding"])


@pytest.mark.parametrize("name", RERANKERS)
def test_llama_server_reranks(models: dict[str, Path], tmp_path: Path, name: str) -> None:
    # Qwen3's rerank prompt is ~265 tokens in the tiny byte-level vocab: 512 per slot
    with _server(models[name], tmp_path / "server.log", "--reranking", n_ctx=1024) as url:
        body = {"query": "what is a cat", "documents": DOCUMENTS, "model": name}
        response = httpx.post(f"{url}/v1/rerank", json=body, timeout=60)

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert sorted(item["index"] for item in results) == [0, 1, 2]
    assert all(math.isfinite(item["relevance_score"]) for item in results)
    if name.startswith("qwen3"):  # p(yes) of the softmaxed yes/no outputs
        assert all(0 < item["relevance_score"] < 1 for item in results)
