"""Fuzzing: valid headers from GGUFWriter, truncated, flipped and spliced with huge lengths.

The parser must return facts or raise GGUFError: never another exception, never hang.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGUFWriter
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from gguf.quants import quant_shape_to_byte_shape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models_app.gguf import GGUFError, GGUFIncompleteError, ModelFacts
from tests.gguf.fuzzing import (
    INTERESTING_U64,
    flip,
    overwrite_u32,
    overwrite_u64,
    parse_bytes,
    seeds,
    without_shards,
)

FUZZ = settings(
    max_examples=300,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEED_NAMES = sorted(seeds())


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_seed_is_a_valid_file(name: str) -> None:
    data, complete = seeds()[name]

    assert isinstance(parse_bytes(data, complete=complete), ModelFacts)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_truncation_inside_the_header_says_it_is_incomplete(name: str) -> None:
    data, _complete = seeds()[name]
    whole = parse_bytes(data, complete=False)
    assert isinstance(whole, ModelFacts)
    header_end = whole.shards[0].header_bytes

    for size in range(header_end):
        result = parse_bytes(data[:size], complete=False)
        assert isinstance(result, GGUFIncompleteError), size
        assert result.needed_bytes > size
    for size in range(header_end, len(data), 97):
        assert without_shards(parse_bytes(data[:size], complete=False)) == without_shards(whole)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("u64"), st.integers(0, 1 << 20), st.sampled_from(INTERESTING_U64)),
    st.tuples(st.just("u64"), st.integers(0, 1 << 20), st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just("u32"), st.integers(0, 1 << 20), st.integers(0, 40)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.integers(1, 64)),
    st.tuples(st.just("dup"), st.integers(0, 1 << 20), st.integers(1, 64)),
)


def _mutate(data: bytes, step: tuple[str, int, int]) -> bytes:
    kind, position, value = step
    position %= max(len(data), 1)
    if kind == "flip":
        return flip(data, position, value)
    if kind == "u64":
        return overwrite_u64(data, position, value)
    if kind == "u32":
        return overwrite_u32(data, position, value)
    if kind == "cut":
        return data[:position] + data[position + value :]
    return data[:position] + data[position : position + value] + data[position:]


@FUZZ
@given(
    name=st.sampled_from(SEED_NAMES),
    steps=st.lists(mutation, min_size=1, max_size=4),
    complete=st.booleans(),
)
def test_mutated_headers_give_facts_or_a_gguf_error(
    name: str, steps: list[tuple[str, int, int]], complete: bool
) -> None:
    data = seeds()[name][0]
    for step in steps:
        data = _mutate(data, step)

    assert isinstance(parse_bytes(data, complete=complete), ModelFacts | GGUFError)


@FUZZ
@given(data=st.binary(max_size=512), version=st.sampled_from([2, 3]))
def test_random_bytes_after_a_valid_preamble_give_facts_or_a_gguf_error(
    data: bytes, version: int
) -> None:
    preamble = b"GGUF" + version.to_bytes(4, "little")

    assert isinstance(parse_bytes(preamble + data), ModelFacts | GGUFError)


# -- generated valid headers round-trip ------------------------------------------------------

_INT_RANGES = {
    V.UINT8: (0, 255),
    V.INT8: (-128, 127),
    V.UINT16: (0, 65535),
    V.INT16: (-32768, 32767),
    V.UINT32: (0, (1 << 32) - 1),
    V.INT32: (-(1 << 31), (1 << 31) - 1),
    V.UINT64: (0, (1 << 64) - 1),
    V.INT64: (-(1 << 63), (1 << 63) - 1),
}
_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_K, Q.Q6_K, Q.IQ4_NL, Q.I8]


@st.composite
def _values(draw: st.DrawFn) -> tuple[object, V, V | None]:
    kind = draw(st.sampled_from([*_INT_RANGES, V.FLOAT32, V.FLOAT64, V.BOOL, V.STRING, V.ARRAY]))
    if kind in _INT_RANGES:
        return draw(st.integers(*_INT_RANGES[kind])), kind, None
    if kind in (V.FLOAT32, V.FLOAT64):
        value = draw(st.floats(allow_nan=False, width=32 if kind == V.FLOAT32 else 64))
        return value, kind, None
    if kind == V.BOOL:
        return draw(st.booleans()), kind, None
    if kind == V.STRING:
        return draw(st.text(min_size=1, max_size=40)), kind, None
    items = draw(st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=1, max_size=20))
    return items, kind, V.INT32


@st.composite
def _tensors(draw: st.DrawFn) -> list[tuple[str, tuple[int, ...], Q]]:
    count = draw(st.integers(0, 6))
    tensors = []
    for index in range(count):
        qtype = draw(st.sampled_from(_TYPES))
        block = GGML_QUANT_SIZES[qtype][0]
        dims = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
        ne0 = block * draw(st.integers(1, 3))
        tensors.append((f"blk.{index % 2}.t{index}", (ne0, *dims), qtype))
    return tensors


def _write_header(path: Path, kvs: dict[str, tuple[object, V, V | None]], tensors: list) -> None:
    writer = GGUFWriter(path, "llama")
    for key, (value, vtype, sub_type) in kvs.items():
        writer.add_key_value(key, value, vtype, sub_type)
    for name, ne, qtype in tensors:
        shape = tuple(reversed(ne))
        nbytes = int(np.prod(quant_shape_to_byte_shape(shape, qtype)))
        writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    kvs=st.dictionaries(st.from_regex(r"x\.[a-z_.]{1,20}", fullmatch=True), _values(), max_size=8),
    tensors=_tensors(),
)
def test_generated_headers_read_back_exactly(
    kvs: dict[str, tuple[object, V, V | None]], tensors: list
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.gguf"
        _write_header(path, kvs, tensors)
        facts = parse_bytes(path.read_bytes(), complete=False)

    assert isinstance(facts, ModelFacts)
    for key, (value, vtype, _sub) in kvs.items():
        expected = float(np.float32(value)) if vtype == V.FLOAT32 else value  # type: ignore[arg-type]
        assert facts.metadata[key] == expected
    assert [(t.name, t.shape, t.ggml_type) for t in facts.tensors] == [
        (name, ne, qtype.name) for name, ne, qtype in tensors
    ]
    for info, (_name, ne, qtype) in zip(facts.tensors, tensors, strict=True):
        block, size = GGML_QUANT_SIZES[qtype]
        assert info.n_bytes == ne[0] // block * size * int(np.prod(ne[1:]))
