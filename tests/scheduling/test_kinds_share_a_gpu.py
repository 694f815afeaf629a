"""Models of every kind share one GPU, whatever order they are deployed in: an embedding
model and two chat models on one simulated GPU, in all six orders, all run (real
llama-server backends on the CPU) and each answers on its own endpoint."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.units import GIB
from models_app.choices import SourceKind
from models_app.gguf import load_model_facts
from models_app.models import CatalogModel
from scheduling import actions, backend, llama_server, tasks
from scheduling.choices import InstanceState
from scheduling.models import Deployment, GpuClaim, Instance
from tests.conftest import skip_or_fail
from tests.factories import CatalogModelFactory, GpuFactory, NodeFactory
from tests.scheduling.conftest import embedding_model_file, tiny_model_file

pytestmark = pytest.mark.django_db
NAMES = ("embed", "chat-a", "chat-b")


@pytest.fixture(autouse=True)
def _needs_llama_server() -> None:
    if llama_server.binary() is None:
        skip_or_fail("llama-server is not built (make install builds it)")


@pytest.fixture
def node(tmp_path: Path, settings):
    settings.GPUFLEET_LOG_DIR = tmp_path / "backends"
    settings.GPUFLEET_BACKEND_START_TIMEOUT = 60.0
    node = NodeFactory(name="node-kinds", disk_free={str(tmp_path): 100 * GIB})
    GpuFactory(node=node, index=0, memory_total=6 * GIB, memory_used=GIB // 4)
    return node


def _catalog(node, path: Path, name: str) -> CatalogModel:
    facts = load_model_facts(path)
    return CatalogModelFactory(
        display_name=name, source_kind=SourceKind.PATH, path=str(path), path_node=node,
        hf_repo="", hf_filename="", files=[], facts=facts.to_dict(),
        context_length=facts.context_length, size_bytes=path.stat().st_size,
    )  # fmt: skip


@pytest.fixture
def models(node, tmp_path: Path) -> dict[str, CatalogModel]:
    (tmp_path / "embed").mkdir()
    return {
        "embed": _catalog(node, embedding_model_file(tmp_path / "embed"), "tiny-embed"),
        "chat": _catalog(node, tiny_model_file(tmp_path), "tiny-chat"),
    }


@pytest.fixture
def stop_all() -> Iterator[None]:
    yield
    for instance in Instance.objects.exclude(server_pid=None):
        pids = (instance.pid or 0, instance.server_pid or 0)
        backend.stop(*pids, timeout=5, instance_id=str(instance.pk))


def _deploy(name: str, models: dict[str, CatalogModel]) -> Deployment:
    embedding = name == "embed"
    return actions.do_create_deployment(
        model=models["embed" if embedding else "chat"], served_name=name, n_ctx=512,
        kind="embedding" if embedding else "chat", parallel=2,
    )  # fmt: skip


def _answers(deployment: Deployment, port: int) -> None:
    base = f"http://127.0.0.1:{port}/v1"
    if deployment.kind == "embedding":
        body = {"model": deployment.served_name, "input": ["hello", "world"]}
        data = httpx.post(f"{base}/embeddings", json=body, timeout=60).raise_for_status().json()
        assert len(data["data"]) == 2 and len(data["data"][0]["embedding"]) > 0
        return
    body = {"model": deployment.served_name, "prompt": "hello", "max_tokens": 3}
    data = httpx.post(f"{base}/completions", json=body, timeout=60).raise_for_status().json()
    assert isinstance(data["choices"][0]["text"], str)


@pytest.mark.parametrize("order", list(itertools.permutations(NAMES)), ids="-".join)
def test_an_embedding_and_two_chat_models_share_one_gpu_in_any_order(
    order, node, models, queued, stop_all, django_capture_on_commit_callbacks
):
    deployments = []
    for name in order:
        with django_capture_on_commit_callbacks(execute=True):
            deployment = _deploy(name, models)
        instance = deployment.instances.get()
        assert instance.state == InstanceState.SCHEDULED, instance.reason
        result = tasks.start_instance(str(instance.pk))
        assert result.startswith("running"), result
        deployments.append(deployment)
    gpu = node.gpus.get()
    assert GpuClaim.objects.filter(gpu=gpu).count() == 3, "all three on the one GPU"
    for deployment in deployments:
        instance = deployment.instances.get()
        assert instance.state == InstanceState.RUNNING and instance.backend == "llama_server"
        _answers(deployment, instance.port)
