"""Fixtures: catalog models with real GGUF facts (header-only files written by the gguf
package), a simulated-looking fleet, and tasks handed to Django-Q recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.units import GIB
from devtools.tiny_gguf import write_tiny_model
from models_app.gguf import load_model_facts
from tests.factories import CatalogModelFactory, GpuFactory, NodeFactory


@pytest.fixture(scope="session")
def seven_b_facts(tmp_path_factory) -> dict:
    """Facts of a Llama-7B-shaped model (32 layers, 4096 wide, GQA 8, Q8_0): ~7 GiB."""
    from gguf import GGMLQuantizationType as Q

    path = tmp_path_factory.mktemp("facts") / "seven-b.gguf"
    (written,) = write_tiny_model(
        path, header_only=True, n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=11008,
        n_ctx_train=32768, n_vocab=32000, weight_type=Q.Q8_0,
    )  # fmt: skip
    return load_model_facts(written, partial=True).to_dict()


@pytest.fixture
def model_7b(db, seven_b_facts):
    return CatalogModelFactory(
        display_name="Seven B",
        facts=seven_b_facts,
        context_length=32768,
        size_bytes=7 * GIB,
    )


@pytest.fixture
def fleet(db):
    """node-a: 2 × 80 GiB (2 GiB in use each); node-b: 1 × 24 GiB. Both with disk room."""
    disk = {"/srv/models": 500 * GIB}
    a = NodeFactory(name="node-a", disk_free=disk)
    b = NodeFactory(name="node-b", disk_free=disk)
    gpus = [GpuFactory(node=a, index=0), GpuFactory(node=a, index=1)]
    gpus.append(GpuFactory(node=b, index=0, memory_total=24 * GIB, name="NVIDIA L4"))
    return {"a": a, "b": b, "gpus": gpus}


def tiny_model_file(directory: Path) -> Path:
    """A real tiny model llama.cpp loads quickly (2 layers, Q8_0)."""
    from gguf import GGMLQuantizationType as Q

    (path,) = write_tiny_model(
        directory / "tiny-q8.gguf", header_only=False, n_layer=2, n_embd=64, n_head=4,
        n_head_kv=2, n_ff=128, n_ctx_train=2048, weight_type=Q.Q8_0,
    )  # fmt: skip
    return path


def embedding_model_file(directory: Path) -> Path:
    """A real tiny embedding model: a BERT encoder with mean pooling (all-MiniLM-style)."""
    (path,) = write_tiny_model(
        directory / "tiny-embed.gguf", arch="bert", pooling="mean", n_layer=2, n_embd=64,
        n_head=4, n_ff=128, n_ctx_train=512, seed=7,
    )  # fmt: skip
    return path
