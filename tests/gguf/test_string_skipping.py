"""The vectorised tokenizer-array skip never lands anywhere but on a true string boundary."""

from __future__ import annotations

import struct
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models_app.gguf import BytesSource, GGUFLimitError, Limits
from models_app.gguf.reader import Cursor
from models_app.gguf.strings import skip_scalar, skip_vectorised

MAX_LEN = 1 << 24


def _encode(strings: list[bytes]) -> bytearray:
    return bytearray(b"".join(struct.pack("<Q", len(s)) + s for s in strings))


def _boundaries(strings: list[bytes]) -> list[int]:
    return [0, *accumulate(8 + len(s) for s in strings)]


tokens = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=12).filter(lambda b: b[0] != 0),
        st.binary(max_size=12),  # empty strings and NUL bytes break the fast path's proof
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(strings=tokens, tail=st.binary(max_size=40), count=st.integers(0, 400))
def test_the_fast_skip_stops_only_on_true_boundaries(
    strings: list[bytes], tail: bytes, count: int
) -> None:
    buf = _encode(strings) + tail
    boundaries = _boundaries(strings)

    pos, skipped = skip_vectorised(buf, 0, count, MAX_LEN, len(buf))

    assert skipped <= min(count, len(strings))
    assert pos == boundaries[skipped]


def test_the_fast_skip_covers_a_plain_vocabulary_in_one_pass() -> None:
    strings = [f"tok{i}".encode() for i in range(5000)]
    buf = _encode(strings) + _encode([b"next.key"])

    pos, skipped = skip_vectorised(buf, 0, 5000, MAX_LEN, len(buf))

    assert (pos, skipped) == (_boundaries(strings)[-1], 5000)


def test_the_fast_skip_leaves_over_long_strings_to_the_checked_path() -> None:
    strings = [b"a" * 300] * 100
    buf = _encode(strings)

    pos, skipped = skip_vectorised(buf, 0, 100, 200, len(buf))
    assert (pos, skipped) == (0, 0)
    with pytest.raises(GGUFLimitError):
        skip_scalar(buf, 0, 100, 200)


@settings(max_examples=200, deadline=None)
@given(strings=tokens, chunk=st.integers(64, 512))
def test_the_cursor_skips_any_string_array_exactly(strings: list[bytes], chunk: int) -> None:
    buf = bytes(_encode(strings)) + b"END!"
    source = BytesSource(buf)
    source.initial_chunk = chunk  # force refills in the middle of the array
    cursor = Cursor(source, Limits())

    cursor.skip_strings(len(strings))

    assert cursor.pos == _boundaries(strings)[-1]
    assert cursor.take(4) == b"END!"
