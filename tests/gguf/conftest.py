"""Fixtures: generated tiny models, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q

from devtools.tiny_gguf import CHATML_TEMPLATE, write_tiny_model


@pytest.fixture(autouse=True)
def _fetch_from_loopback(settings):
    """The test servers run on 127.0.0.1, an address the fetch guard refuses by default."""
    settings.GPUFLEET_FETCH_ALLOW = ["127.0.0.0/8", "::1"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf-models")


@pytest.fixture(scope="session")
def llama_gqa(model_dir: Path) -> Path:
    """llama, 3 layers, 8 query heads sharing 2 KV heads, F16 weights, ChatML template."""
    (path,) = write_tiny_model(
        model_dir / "llama-gqa.gguf",
        n_layer=3,
        n_embd=128,
        n_head=8,
        n_head_kv=2,
        n_ff=256,
        n_ctx_train=512,
        chat_template=CHATML_TEMPLATE,
        name="Tiny Llama GQA",
    )
    return path


@pytest.fixture(scope="session")
def qwen2_q8(model_dir: Path) -> Path:
    (path,) = write_tiny_model(
        model_dir / "qwen2-q8.gguf", arch="qwen2", weight_type=Q.Q8_0, rope_freq_base=1e6
    )
    return path


@pytest.fixture(scope="session")
def moe_q4(model_dir: Path) -> Path:
    (path,) = write_tiny_model(
        model_dir / "moe-q4.gguf", n_expert=4, n_expert_used=2, weight_type=Q.Q4_0
    )
    return path


@pytest.fixture(scope="session")
def big_payload(model_dir: Path) -> Path:
    """A model whose tensor data is several MB while its header is small."""
    (path,) = write_tiny_model(
        model_dir / "big-payload.gguf",
        n_embd=256,
        n_head=4,
        n_ff=512,
        n_vocab=4096,
        weight_type=Q.F32,
    )
    return path
