"""Judging a model before downloading it: HTTP Range requests against a local server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devtools.tiny_gguf import write_tiny_model
from models_app.gguf import (
    GGUFLimitError,
    GGUFRemoteError,
    HttpRangeSource,
    Limits,
    load_model_facts,
    parse_model,
)
from tests.gguf.http_server import serve_files


@pytest.fixture
def served(tmp_path: Path, big_payload: Path) -> Path:
    shutil.copy(big_payload, tmp_path / "big.gguf")
    return tmp_path


def test_it_reads_a_remote_header_while_fetching_only_a_few_hundred_kb(
    served: Path, big_payload: Path
) -> None:
    with serve_files(served) as (base, state):
        remote = load_model_facts(f"{base}/files/big.gguf")

    assert big_payload.stat().st_size > 4_000_000
    assert state.bytes_served <= 300_000
    assert len(state.requests) == 1
    assert remote.tensors == load_model_facts(big_payload).tensors
    assert remote.vocab_size == 4096


def test_the_source_counts_requests_and_bytes(served: Path) -> None:
    with (
        serve_files(served) as (base, state),
        HttpRangeSource(f"{base}/files/big.gguf", initial_chunk=4096) as source,
    ):
        facts = parse_model(source)

    assert source.requests >= 2  # 4 KiB, then 8 KiB, ... until the header is in
    assert source.bytes_received == state.bytes_served
    assert state.bytes_served < 2 * facts.shards[0].header_bytes  # doubling overshoots < 2x
    assert source.size() == served.joinpath("big.gguf").stat().st_size
    assert facts.tensor_count > 0


def test_it_refuses_a_server_that_ignores_range_requests(served: Path) -> None:
    with (
        serve_files(served, honour_range=False) as (base, _state),
        pytest.raises(GGUFRemoteError, match="ignored the Range request"),
    ):
        load_model_facts(f"{base}/files/big.gguf")


def test_it_sends_authorization_and_follows_redirects(served: Path) -> None:
    token = "Bearer secret-token"
    with serve_files(served, required_auth=token) as (base, state):
        facts = load_model_facts(f"{base}/redirect/big.gguf", http_headers={"Authorization": token})

    assert facts.vocab_size == 4096
    assert [r["path"] for r in state.requests] == ["/redirect/big.gguf", "/files/big.gguf"]
    assert state.requests[-1]["Range"] == "bytes=0-262143"


def test_it_reports_an_authorization_failure(served: Path) -> None:
    with (
        serve_files(served, required_auth="Bearer right") as (base, _state),
        pytest.raises(GGUFRemoteError, match="HTTP 401"),
    ):
        load_model_facts(f"{base}/files/big.gguf", http_headers={"Authorization": "x"})


def test_it_reports_a_missing_remote_file(served: Path) -> None:
    with (
        serve_files(served) as (base, _state),
        pytest.raises(GGUFRemoteError, match="HTTP 404"),
    ):
        load_model_facts(f"{base}/files/nothing.gguf?token=abc")


def test_error_messages_leave_out_the_query_string(served: Path) -> None:
    with (
        serve_files(served) as (base, _state),
        pytest.raises(GGUFRemoteError) as error,
    ):
        load_model_facts(f"{base}/files/nothing.gguf?token=abc")

    assert "token=abc" not in str(error.value)


def test_it_reports_an_unreachable_server() -> None:
    with pytest.raises(GGUFRemoteError, match="cannot read"):
        load_model_facts("http://127.0.0.1:9/model.gguf", timeout=2)


def test_it_reads_the_shards_of_a_remote_split_model(tmp_path: Path) -> None:
    paths = write_tiny_model(tmp_path / "tiny.gguf", split_max_tensors=10)
    with serve_files(tmp_path) as (base, _state):
        facts = load_model_facts(f"{base}/files/{paths[1].name}")

    assert len(facts.shards) == len(paths) == 3
    assert facts.tensor_count == 21


def test_it_says_so_when_a_remote_header_is_larger_than_the_limit(served: Path) -> None:
    with (
        serve_files(served) as (base, _state),
        pytest.raises(GGUFLimitError, match="larger than the 2048-byte limit"),
    ):
        load_model_facts(f"{base}/files/big.gguf", limits=Limits(max_header_bytes=2048))


def test_a_small_file_sent_whole_by_a_server_without_range_support_is_accepted(
    tmp_path: Path,
) -> None:
    (path,) = write_tiny_model(tmp_path / "small.gguf")
    assert path.stat().st_size < 256 * 1024
    with serve_files(tmp_path, honour_range=False) as (base, _state):
        facts = load_model_facts(f"{base}/files/small.gguf")

    assert facts.tensors == load_model_facts(path).tensors
    assert facts.tensor_count == 21
