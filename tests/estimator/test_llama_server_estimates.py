"""The estimate of a deployment follows the flags llama-server is started with: its
buffers as llama-server logs them (``--log-verbosity 4``) match the estimate made from
``scheduling.fleet.run_settings`` for slots, flash attention and kinds."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from gguf import GGMLQuantizationType as Q

from core.units import MIB
from devtools.tiny_gguf import write_tiny_model
from models_app.estimator import estimate, prepare
from models_app.estimator.result import DeviceEstimate
from models_app.gguf import ModelFacts, load_model_facts
from scheduling import fleet, llama_server, ports
from scheduling.backend import LLAMA_SERVER, LaunchSpec
from scheduling.backend_logs import parse_log
from scheduling.models import Deployment
from tests.conftest import skip_or_fail
from tests.factories import CatalogModelFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def binary() -> Path:
    found = llama_server.binary()
    if found is None:
        skip_or_fail("llama-server is not built (make install builds it)")
    assert found is not None
    return found


def _load_log(binary: Path, deployment: Deployment, path: Path, tmp_path: Path) -> str:
    n_batch, n_ubatch = fleet.batch_sizes(deployment)
    port = ports.free_port(39700, 39799, set()) or 39799
    spec = LaunchSpec(
        instance_id="estimate", model_path=path, port=port, log_path=tmp_path / "log",
        state_dir=tmp_path, server=LLAMA_SERVER, parallel=deployment.parallel,
        kind=deployment.kind, pooling=fleet.pooling_flag(deployment), n_ctx=deployment.n_ctx,
        n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=deployment.flash_attn,
        extra_options={"n_threads": "1"},
    )  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "passive"}
    server = subprocess.Popen(
        llama_server.command(spec, binary), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env,
    )  # fmt: skip
    try:
        _wait_healthy(port, server)
    finally:
        server.terminate()
        out = server.communicate(timeout=30)[0]
    return out


def _wait_healthy(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("llama-server did not become healthy")


def _estimate_and_log(
    binary: Path, tmp_path: Path, spec: dict, kind: str, parallel: int, fa: bool, n_ctx: int
) -> tuple[DeviceEstimate, dict[str, int], ModelFacts]:
    """The CPU estimate of a deployment of a generated model, and the buffers llama-server
    logs when started for it (per component, summed over buffer types)."""
    (path,) = write_tiny_model(tmp_path / "model.gguf", **spec)
    facts = load_model_facts(path)
    deployment = Deployment(
        model=CatalogModelFactory(facts=facts.to_dict()), n_ctx=n_ctx, parallel=parallel,
        kind=kind, flash_attn=fa,
    )  # fmt: skip
    reported = parse_log(_load_log(binary, deployment, path, tmp_path))
    cpu = estimate(prepare(facts), fleet.run_settings(deployment), ()).cpu
    logged = {part: sum(sizes.values()) for part, sizes in reported.buffers.items()}
    return cpu, logged, facts


MODELS = {
    "llama-q4": dict(n_layer=4, n_embd=256, n_head=8, n_head_kv=4, n_ff=512, n_vocab=8000,
                     n_ctx_train=4096, weight_type=Q.Q4_0),
}  # fmt: skip
CASES = [
    ("llama-q4", "chat", 1, False, 1024),
    ("llama-q4", "chat", 4, False, 1024),
    ("llama-q4", "chat", 4, True, 768),
]


@pytest.mark.parametrize(("model", "kind", "parallel", "fa", "n_ctx"), CASES)
def test_the_estimate_matches_llama_servers_buffers(
    binary, tmp_path, model, kind, parallel, fa, n_ctx
):
    cpu, logged, _ = _estimate_and_log(binary, tmp_path, MODELS[model], kind, parallel, fa, n_ctx)
    assert abs(cpu.weights - logged["weights"]) <= MIB
    assert abs(cpu.kv_cache - logged.get("kv_cache", 0)) <= MIB
    assert abs(cpu.compute - logged["compute"]) <= 0.10 * logged["compute"]
    assert abs(cpu.output - logged.get("output", 0)) <= MIB


ENCODERS = {
    "qwen3-rank": dict(arch="qwen3", pooling="rank", n_cls_out=2, n_ctx_train=2048),
    "qwen3-embed": dict(arch="qwen3", pooling="last", n_ctx_train=2048),
    "bert-embed": dict(arch="bert", pooling="mean", n_ctx_train=512),
    "bert-rank": dict(arch="bert", pooling="rank", n_ctx_train=2048, n_embd=128, n_head=4),
    "nomic-embed": dict(arch="nomic-bert", pooling="mean", n_ctx_train=2048, n_vocab=3000),
}
ENCODER_CASES = [
    ("qwen3-rank", "reranker", 2, False, 1024),
    ("qwen3-embed", "embedding", 2, True, 1024),
    ("bert-embed", "embedding", 1, False, 512),
    ("bert-embed", "embedding", 4, True, 512),
    ("bert-rank", "reranker", 2, False, 2048),
    ("nomic-embed", "embedding", 3, True, 699),  # mean pooling: n_ubatch a multiple of 3
]


@pytest.mark.parametrize(("model", "kind", "parallel", "fa", "n_ctx"), ENCODER_CASES)
def test_an_embedding_or_reranker_estimate_matches_llama_servers_buffers(
    binary, tmp_path, model, kind, parallel, fa, n_ctx
):
    """Embeddings on: the pooling and classifier head are replayed (encoder.py), bert and
    nomic-bert exactly, without a KV cache; the estimate is llama-server's figures."""
    cpu, logged, facts = _estimate_and_log(
        binary, tmp_path, ENCODERS[model], kind, parallel, fa, n_ctx
    )
    slack = MIB // 100  # the log prints MiB to two decimals
    if facts.architecture in ("bert", "nomic-bert"):
        assert logged.get("kv_cache", 0) == 0 and cpu.kv_cache == 0
    assert abs(cpu.kv_cache - logged.get("kv_cache", 0)) <= slack
    assert abs(cpu.weights - logged["weights"]) <= slack
    assert abs(cpu.compute - logged["compute"]) <= slack
    assert abs(cpu.output - logged.get("output", 0)) <= slack
