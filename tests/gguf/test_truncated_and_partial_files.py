"""Truncated files, partial downloads and the header size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from models_app.gguf import (
    BytesSource,
    GGUFError,
    GGUFIncompleteError,
    GGUFLimitError,
    Limits,
    LocalFileSource,
    PartialFileSource,
    parse_model,
)
from models_app.gguf.values import UINT64
from tests.gguf.builders import (
    ARCH,
    CountingSource,
    gguf,
    kv_array,
    kv_str,
    one_tensor_file,
    tensor_info,
)


def parse(data: bytes, limits: Limits | None = None, *, complete: bool = True):
    source = BytesSource(data, complete=complete)
    return parse_model(source, limits) if limits else parse_model(source)


def test_it_rejects_an_empty_file() -> None:
    with pytest.raises(GGUFIncompleteError, match="needs at least 4 bytes, only 0"):
        parse(b"")


def test_a_complete_file_whose_tensor_data_is_cut_short_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(one_tensor_file()[:-10])

    with pytest.raises(GGUFIncompleteError) as error, LocalFileSource(path) as source:
        parse_model(source)
    assert error.value.needed_bytes == error.value.available_bytes + 10


def test_a_partial_file_may_lack_tensor_data(tmp_path: Path) -> None:
    path = tmp_path / "partial.gguf"
    path.write_bytes(one_tensor_file()[:-100])

    with PartialFileSource(path) as source:
        facts = parse_model(source)
    assert facts.shards[0].required_size == len(one_tensor_file())


def test_a_partial_file_cut_inside_the_header_says_how_many_bytes_it_needs(
    tmp_path: Path,
) -> None:
    data = gguf([ARCH, kv_str("general.name", "x" * 1000)], [tensor_info("t", [32])])
    path = tmp_path / "partial.gguf"
    path.write_bytes(data[:500])

    with (
        pytest.raises(GGUFIncompleteError, match="needs at least") as error,
        PartialFileSource(path) as source,
    ):
        parse_model(source)
    assert error.value.available_bytes == 500
    assert 500 < error.value.needed_bytes <= len(data)


def test_it_says_so_when_a_header_is_larger_than_the_limit() -> None:
    data = gguf([ARCH, kv_str("general.name", "x" * 5000)], [tensor_info("t", [32])])

    with pytest.raises(GGUFLimitError, match="larger than the 4096-byte limit"):
        parse(data, Limits(max_header_bytes=4096), complete=False)


def test_it_never_reads_far_past_the_header() -> None:
    data = one_tensor_file(dims=(1 << 20,), nbytes=4 << 20)
    source = CountingSource(data)
    source.initial_chunk = 4096

    parse_model(source)
    assert source.bytes_read <= 4096


def test_a_missing_file_is_a_gguf_error(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="cannot open"):
        LocalFileSource(tmp_path / "missing.gguf")


class UnknownSizeSource(BytesSource):
    """A source that cannot tell its size (like a server answering ``bytes 0-9/*``)."""

    def size(self) -> None:  # type: ignore[override]
        return None


def test_the_header_limit_is_named_in_mib_when_the_size_is_unknown() -> None:
    data = gguf([kv_array("x", UINT64, [], length=10_000_000)])

    with pytest.raises(GGUFLimitError, match="larger than the 64 MiB limit"):
        parse_model(UnknownSizeSource(data))
