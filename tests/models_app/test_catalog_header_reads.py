"""Adding a hub model whose header read meets a transient error, or a file too short."""

from __future__ import annotations

import pytest

from models_app import catalog
from models_app.catalog import CatalogError
from models_app.transfer import RetryPolicy
from tests.transfer.conftest import Sleeps

pytestmark = pytest.mark.django_db

SHORT = b"GGUF\x03\x00\x00\x00" + b"\x05\x00\x00\x00\x00\x00\x00\x00" * 2 + b"abcdefghijk"


@pytest.fixture
def sleeps(monkeypatch) -> Sleeps:
    recorded = Sleeps()
    policy = RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0, jitter=False, sleep=recorded)
    monkeypatch.setattr("models_app.gguf.remote.header_retry_policy", lambda: policy)
    return recorded


@pytest.mark.parametrize("status", [500, 429])
def test_adding_a_model_survives_one_transient_error_on_the_header_read(gguf_hub, sleeps, status):
    gguf_hub.hub.faults.fail_times = 1
    gguf_hub.hub.faults.fail_status = status
    gguf_hub.hub.faults.retry_after = 2

    entry = catalog.add_hf_model("acme/tiny-GGUF", "tiny-Q8_0.gguf")

    assert entry.context_length == 2048
    assert sleeps == [2.0]


def test_adding_a_35_byte_file_says_it_is_too_short_and_asks_only_for_its_bytes(gguf_hub, sleeps):
    gguf_hub.hub.add_repo("acme/short-GGUF", {"short.gguf": SHORT})

    with pytest.raises(CatalogError) as raised:
        catalog.add_hf_model("acme/short-GGUF", "short.gguf")

    assert "not a GGUF file or is too short (35 bytes)" in raised.value.message
    assert "timed out" not in raised.value.message
    ranges = [r.headers.get("range") for r in gguf_hub.hub.requests(method="GET")]
    assert [r for r in ranges if r] == ["bytes=0-34", "bytes=0-34"]  # hub, then CDN
