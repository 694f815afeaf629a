"""GGUF header reads against the fake hub: short files, known sizes, transient errors."""

from __future__ import annotations

import time

import pytest

from devtools.tiny_gguf import write_tiny_model
from models_app.gguf import GGUFRemoteError, GGUFTooShortError, HttpRangeSource, parse_model
from models_app.gguf.remote import header_retry_policy
from models_app.transfer import RetryPolicy, resolve_hf_file
from models_app.transfer.sources import HfFile
from tests.transfer.conftest import Sleeps
from tests.transfer.fakehub import FakeHub

SHORT = b"GGUF\x03\x00\x00\x00" + b"\x05\x00\x00\x00\x00\x00\x00\x00" * 2 + b"abcdefghijk"


def url(hub: FakeHub, name: str) -> str:
    return f"{hub.url}/acme/h/resolve/main/{name}"


def test_a_35_byte_file_is_reported_too_short_not_timed_out(hub: FakeHub) -> None:
    hub.add_repo("acme/h", {"short.gguf": SHORT})
    assert len(SHORT) == 35

    with (
        HttpRangeSource(url(hub, "short.gguf")) as source,
        pytest.raises(GGUFTooShortError, match=r"not a GGUF file or is too short \(35 bytes\)"),
    ):
        parse_model(source)


def test_a_header_read_does_not_ask_past_the_known_end_of_the_file(hub: FakeHub) -> None:
    hub.add_repo("acme/h", {"short.gguf": SHORT})
    remote = resolve_hf_file(HfFile("acme/h", "short.gguf", endpoint=hub.url))
    assert remote.size == 35

    with (
        HttpRangeSource(url(hub, "short.gguf"), size=remote.size) as source,
        pytest.raises(GGUFTooShortError, match=r"\(35 bytes\)"),
    ):
        parse_model(source)

    ranges = [r.headers.get("range") for r in hub.requests(method="GET")]
    assert ranges and all(r == "bytes=0-34" for r in ranges)


def test_a_header_read_retries_a_transient_500_or_429_honouring_retry_after(
    hub: FakeHub, tmp_path
) -> None:
    (path,) = write_tiny_model(tmp_path / "t.gguf", n_layer=2)
    hub.add_repo("acme/h", {"t.gguf": path.read_bytes()})
    hub.faults.fail_times = 2
    hub.faults.fail_status = 429
    hub.faults.retry_after = 3
    sleeps = Sleeps()

    policy = RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0, jitter=False, sleep=sleeps)
    with HttpRangeSource(url(hub, "t.gguf"), retry=policy) as source:
        facts = parse_model(source)

    assert facts.tensor_count > 0
    assert sleeps == [3.0, 3.0]  # Retry-After honoured, above the backoff


def test_a_header_read_gives_up_after_three_attempts_within_ten_seconds(hub: FakeHub) -> None:
    hub.add_repo("acme/h", {"short.gguf": SHORT})
    hub.faults.fail_times = 10
    hub.faults.fail_status = 500
    policy = header_retry_policy()
    assert policy.attempts == 3
    worst = sum(policy.max_delay for _ in range(policy.attempts - 1))
    assert worst < 10

    sleeps = Sleeps()
    fast = RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0, jitter=False, sleep=sleeps)
    started = time.monotonic()
    with (
        HttpRangeSource(url(hub, "short.gguf"), retry=fast) as source,
        pytest.raises(GGUFRemoteError, match=r"HTTP 500.*gave up after 3 attempts"),
    ):
        parse_model(source)
    assert time.monotonic() - started < 5
    assert len(sleeps) == 2 and hub.faults.fail_times == 7
