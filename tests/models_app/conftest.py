"""Fixtures: a storage root with tiny generated models, a fake hub (empty, or serving some),
and the estimate cache emptied; ``hub_copy``, a queued copy of a hub model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q

from devtools.tiny_gguf import write_tiny_model
from models_app.estimate_service import FACTS_CACHE
from models_app.models import ModelFile
from tests.factories import CatalogModelFactory, ModelFileFactory, NodeFactory
from tests.transfer.fakehub import FakeHub


@pytest.fixture(autouse=True)
def _fetch_from_loopback(settings):
    """The test servers run on 127.0.0.1, an address the fetch guard refuses by default."""
    settings.GPUFLEET_FETCH_ALLOW = ["127.0.0.0/8", "::1"]


@pytest.fixture(autouse=True)
def _empty_facts_cache():
    FACTS_CACHE.clear()
    yield
    FACTS_CACHE.clear()


@pytest.fixture
def storage_root(tmp_path: Path, settings) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    settings.GPUFLEET_STORAGE_ROOTS = [str(root)]
    return root


def hub_copy(root: Path, repo: str, files: Mapping[str, bytes], **model_fields) -> ModelFile:
    """A queued copy of ``repo``'s first file (its shards too) under ``root``."""
    names = list(files)
    model = CatalogModelFactory(
        hf_repo=repo,
        hf_filename=names[0],
        files=[{"name": n, "size": len(d), "sha256": ""} for n, d in files.items()],
        size_bytes=sum(len(d) for d in files.values()),
        **model_fields,
    )
    node = NodeFactory(disk_free={str(root): 100 * 1024**3})
    return ModelFileFactory(
        model=model, node=node, storage_root=str(root), path=str(root / "m" / names[0])
    )


@pytest.fixture
def tiny_model(storage_root: Path) -> Path:
    """A llama-style model (8 layers, GQA) inside the storage root."""
    (path,) = write_tiny_model(
        storage_root / "tiny-llama.gguf",
        header_only=False,
        n_layer=8,
        n_embd=256,
        n_head=8,
        n_head_kv=2,
        n_ff=512,
        n_ctx_train=4096,
    )
    return path


@pytest.fixture
def hub(monkeypatch):
    """An empty fake hub, the one ``HF_ENDPOINT`` names."""
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


@dataclass
class GgufHub:
    """The fake hub with real tiny GGUF files, and those files on disk to compare with.

    - ``acme/tiny-GGUF``: ``tiny-Q8_0.gguf`` (one file, 2048-token context), a split
      model ``split/big-0000N-of-00003.gguf`` (4096-token context) and a README.
    - ``acme/gated-GGUF``: one file behind the hub's gate.
    - ``acme/incomplete-GGUF``: a split model whose second shard is missing.
    """

    hub: FakeHub
    single: Path
    shards: list[Path]

    def resolve_url(self, repo: str, name: str, revision: str = "main") -> str:
        return f"{self.hub.url}/{repo}/resolve/{revision}/{name}"


@pytest.fixture
def gguf_hub(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    files = tmp_path / "hub-files"
    (files / "split").mkdir(parents=True)
    (single,) = write_tiny_model(
        files / "tiny-Q8_0.gguf", n_layer=4, n_ctx_train=2048, weight_type=Q.Q8_0
    )
    shards = write_tiny_model(
        files / "split" / "big.gguf", n_layer=4, n_ctx_train=4096, split_max_tensors=14
    )
    with FakeHub() as fake:
        content: dict[str, bytes | Path] = {"tiny-Q8_0.gguf": single, "README.md": b"# tiny\n"}
        content |= {f"split/{shard.name}": shard for shard in shards}
        fake.add_repo("acme/tiny-GGUF", content)
        fake.add_repo("acme/gated-GGUF", {"gated.gguf": single}, gated=True)
        incomplete = {f"split/{shards[0].name}": shards[0], f"split/{shards[2].name}": shards[2]}
        fake.add_repo("acme/incomplete-GGUF", incomplete)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield GgufHub(fake, single, shards)
