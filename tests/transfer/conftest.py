"""Fixtures: a fake hub per test, a few files, and an engine that never really sleeps."""

from __future__ import annotations

import os

# huggingface_hub reads these when it is imported: Xet is not spoken by the fake hub,
# and no token saved on this machine may leak into a test.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.units import MIB
from devtools.tiny_gguf import write_tiny_model
from models_app.transfer import DownloadOptions, HfFile, RetryPolicy
from tests.transfer.fakehub import FakeHub

REPO = "acme/tiny-GGUF"


@pytest.fixture(autouse=True)
def _fetch_from_loopback(settings):
    """The test servers run on 127.0.0.1, an address the fetch guard refuses by default."""
    settings.GPUFLEET_FETCH_ALLOW = ["127.0.0.0/8", "::1"]


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        yield fake


@pytest.fixture(scope="session")
def payload() -> bytes:
    """A few MiB of random bytes: big enough for several chunks and batches."""
    return os.urandom(6 * MIB + 12345)


@pytest.fixture(scope="session")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real split GGUF model: ``tiny-0000N-of-00003.gguf`` -> bytes."""
    paths = write_tiny_model(
        tmp_path_factory.mktemp("split") / "tiny.gguf", n_layer=4, split_max_tensors=14
    )
    assert len(paths) == 3
    return {path.name: path.read_bytes() for path in paths}


@pytest.fixture
def repo(hub: FakeHub, payload: bytes, split_model: dict[str, bytes]):
    files: dict[str, bytes | Path] = {
        "README.md": b"# tiny\n",
        "tiny-Q8_0.gguf": payload,
        **{f"split/{name}": data for name, data in split_model.items()},
    }
    return hub.add_repo(REPO, files)


class Sleeps(list[float]):
    """An injectable ``sleep`` that records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def options(sleeps: Sleeps) -> DownloadOptions:
    """No real sleeping, no jitter, no space margin (tmp dirs may be on a small disk)."""
    policy = RetryPolicy(attempts=4, base_delay=1.0, jitter=False, sleep=sleeps)
    return DownloadOptions(retry=policy, space_margin=0)


def hf(hub: FakeHub, filename: str, **fields) -> HfFile:
    """A file of the test repo on the fake hub."""
    return HfFile(fields.pop("repo_id", REPO), filename, endpoint=hub.url, **fields)
