"""Broken and hostile headers: a clear GGUFError, bounded reads, nothing allocated blindly."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from models_app.gguf import (
    ArraySummary,
    BytesSource,
    GGUFError,
    GGUFFormatError,
    GGUFIncompleteError,
    GGUFLimitError,
    GGUFUnsupportedError,
    Limits,
    LocalFileSource,
    parse_model,
)
from models_app.gguf.values import ARRAY, INT32, STRING, UINT8, UINT16, UINT32
from tests.gguf.builders import (
    ARCH,
    F32,
    Q4_0,
    Q8_0,
    CountingSource,
    gguf,
    gstr,
    kv,
    kv_array,
    kv_str,
    kv_u32,
    one_tensor_file,
    tensor_info,
    u32,
    u64,
)

HUGE = (1 << 64) - 1


def parse(data: bytes, limits: Limits | None = None, *, complete: bool = True):
    source = BytesSource(data, complete=complete)
    return parse_model(source, limits) if limits else parse_model(source)


def test_a_minimal_valid_file_parses() -> None:
    facts = parse(one_tensor_file())

    assert facts.tensor_count == 1 and facts.parameter_count == 32
    assert facts.architecture == "llama"


def test_it_rejects_a_file_with_the_wrong_magic() -> None:
    with pytest.raises(GGUFFormatError, match="not a GGUF file"):
        parse(gguf([ARCH], magic=b"GGML"))


def test_it_rejects_gguf_version_1_clearly() -> None:
    with pytest.raises(GGUFUnsupportedError, match="version 1 is not supported"):
        parse(gguf([ARCH], version=1))


def test_it_rejects_an_unknown_version() -> None:
    with pytest.raises(GGUFUnsupportedError, match="version 4"):
        parse(gguf([ARCH], version=4))


def test_it_rejects_a_big_endian_file() -> None:
    with pytest.raises(GGUFUnsupportedError, match="big-endian"):
        parse(gguf([ARCH], version=3 << 24))


def test_it_reads_gguf_version_2() -> None:
    data = gguf([ARCH], [tensor_info("t", [32])], version=2, data=b"\0" * 128)

    assert parse(data).gguf_version == 2


def test_it_rejects_a_string_length_past_the_end_of_the_file() -> None:
    data = gguf([kv("general.architecture", STRING, gstr("llama", length=1000))])

    with pytest.raises(GGUFIncompleteError):
        parse(data)


def test_it_rejects_a_string_longer_than_the_limit_without_reading_it() -> None:
    data = gguf([kv("general.architecture", STRING, gstr("llama", length=1 << 40))])
    source = CountingSource(data + b"\0" * 100)

    with pytest.raises(GGUFLimitError, match="string length 1099511627776 is over the limit"):
        parse_model(source)
    assert source.bytes_read <= len(data) + 100


def test_it_rejects_a_key_length_of_two_to_the_64() -> None:
    data = gguf([u64(HUGE) + b"k" * 64])

    with pytest.raises(GGUFLimitError):
        parse(data)


def test_it_rejects_an_absurd_tensor_count_before_allocating() -> None:
    data = gguf([ARCH], n_tensors=HUGE)

    with pytest.raises(GGUFLimitError, match="tensor count"):
        parse(data)


def test_it_rejects_a_tensor_count_the_file_cannot_hold() -> None:
    data = gguf([ARCH], n_tensors=90_000)  # under the cap, but 32 bytes each are not there

    with pytest.raises(GGUFIncompleteError):
        parse(data)


def test_it_rejects_an_absurd_key_value_count() -> None:
    with pytest.raises(GGUFLimitError, match="key/value count"):
        parse(gguf([ARCH], n_kv=100_001))


def test_it_rejects_an_array_longer_than_the_limit() -> None:
    data = gguf([ARCH, kv_array("x", UINT8, [b"\0"], length=1 << 40)])

    with pytest.raises(GGUFLimitError, match="array 'x' item count"):
        parse(data)


def test_it_rejects_an_array_length_past_the_end_of_the_file() -> None:
    data = gguf([ARCH, kv_array("tokenizer.ggml.tokens", STRING, [gstr("a")], length=1000)])

    with pytest.raises(GGUFIncompleteError):
        parse(data)


def test_huge_declared_lengths_allocate_nothing_big() -> None:
    hostile = [
        gguf([ARCH, kv_array("x", UINT32, [u32(1)], length=(1 << 24))]),
        gguf([ARCH, kv_array("x", STRING, [gstr("a")], length=(1 << 24))]),
        gguf([ARCH], n_tensors=99_999),
        gguf([kv("k", STRING, gstr("v", length=(1 << 24)))]),
    ]
    tracemalloc.start()
    for data in hostile:
        with pytest.raises(GGUFError):
            parse(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert peak < 1 << 20


def test_it_reads_an_array_of_arrays() -> None:
    inner = u32(UINT16) + u64(2) + b"\1\0\2\0"
    data = gguf([ARCH, kv_array("nested", ARRAY, [inner, inner])])

    assert parse(data).metadata["nested"] == [[1, 2], [1, 2]]


def test_it_rejects_arrays_nested_too_deeply() -> None:
    deepest = u32(UINT8) + u64(1) + b"\0"
    middle = u32(ARRAY) + u64(1) + deepest
    data = gguf([ARCH, kv_array("nested", ARRAY, [middle])])

    with pytest.raises(GGUFLimitError, match="nests deeper"):
        parse(data)


def test_it_rejects_an_unknown_value_type() -> None:
    with pytest.raises(GGUFFormatError, match="unknown value type 13"):
        parse(gguf([ARCH, kv("x", 13, b"\0" * 8)]))


def test_it_rejects_an_unknown_array_item_type() -> None:
    with pytest.raises(GGUFFormatError, match="unknown value type 99"):
        parse(gguf([ARCH, kv_array("x", 99, [b"\0"])]))


def test_it_rejects_duplicate_keys() -> None:
    with pytest.raises(GGUFFormatError, match="duplicate metadata key"):
        parse(gguf([ARCH, kv_u32("a", 1), kv_u32("a", 2)]))


def test_it_rejects_an_empty_key() -> None:
    with pytest.raises(GGUFFormatError, match="empty metadata key"):
        parse(gguf([kv_u32("", 1)]))


def test_it_rejects_a_key_that_is_not_utf8() -> None:
    with pytest.raises(GGUFFormatError, match="not UTF-8"):
        parse(gguf([kv(b"\xff\xfe", UINT32, u32(1))]))


def test_string_values_that_are_not_utf8_are_kept_with_replacements() -> None:
    data = gguf([ARCH, kv("general.name", STRING, gstr(b"caf\xe9"))])

    assert parse(data).name == "caf\ufffd"


def test_it_rejects_an_unknown_tensor_type() -> None:
    with pytest.raises(GGUFFormatError, match="unknown type 4"):
        parse(gguf([ARCH], [tensor_info("t", [32], type_id=4)], data=b"\0" * 32))


@pytest.mark.parametrize("dims", [[], [1, 1, 1, 1, 1], [32] * 9])
def test_it_rejects_a_tensor_without_one_to_four_dimensions(dims: list[int]) -> None:
    with pytest.raises(GGUFFormatError, match="dimensions"):
        parse(gguf([ARCH], [tensor_info("t", dims)], data=b"\0" * 32))


@pytest.mark.parametrize("dims", [[32, 0], [0], [32, 1 << 63], [32, HUGE]])
def test_it_rejects_a_zero_or_negative_dimension(dims: list[int]) -> None:
    with pytest.raises(GGUFFormatError, match="invalid dimension"):
        parse(gguf([ARCH], [tensor_info("t", dims)], data=b"\0" * 32))


def test_it_rejects_an_element_count_that_overflows_int64() -> None:
    dims = [1 << 31, 1 << 31, 1 << 2]

    with pytest.raises(GGUFFormatError, match="overflows int64"):
        parse(gguf([ARCH], [tensor_info("t", dims)], data=b"\0" * 32))


def test_it_rejects_a_byte_size_that_overflows_int64() -> None:
    dims = [1 << 31, 1 << 31]  # 2**62 F32 elements are 2**64 bytes

    with pytest.raises(GGUFFormatError, match="byte size"):
        parse(gguf([ARCH], [tensor_info("t", dims)], data=b"\0" * 32))


def test_it_rejects_a_row_that_is_not_a_whole_number_of_blocks() -> None:
    with pytest.raises(GGUFFormatError, match="not a multiple of the block size 32"):
        parse(gguf([ARCH], [tensor_info("t", [48, 2], type_id=Q8_0)], data=b"\0" * 128))


def test_it_computes_quantized_sizes_as_ggml_does() -> None:
    data = gguf([ARCH], [tensor_info("t", [64, 3, 2], type_id=Q4_0)], data=b"\0" * 216)
    (tensor,) = parse(data).tensors

    assert tensor.n_bytes == 64 // 32 * 18 * 3 * 2
    assert tensor.n_elements == 384


def test_it_rejects_duplicate_tensor_names() -> None:
    tensors = [tensor_info("t", [32]), tensor_info("t", [32], offset=128)]

    with pytest.raises(GGUFFormatError, match="duplicate tensor name"):
        parse(gguf([ARCH], tensors, data=b"\0" * 256))


def test_it_rejects_a_tensor_offset_that_is_not_where_ggml_expects() -> None:
    tensors = [tensor_info("a", [32]), tensor_info("b", [32], offset=64)]

    with pytest.raises(GGUFFormatError, match="data offset 64, expected 128"):
        parse(gguf([ARCH], tensors, data=b"\0" * 256))


@pytest.mark.parametrize("alignment", [0, 3, 48])
def test_it_rejects_an_alignment_that_is_not_a_power_of_two(alignment: int) -> None:
    with pytest.raises(GGUFFormatError, match="power of two"):
        parse(gguf([ARCH, kv_u32("general.alignment", alignment)]))


def test_it_rejects_an_alignment_that_is_not_a_uint32() -> None:
    with pytest.raises(GGUFFormatError, match="must be a uint32"):
        parse(gguf([ARCH, kv("general.alignment", INT32, u32(64))]))


def test_it_honours_a_custom_alignment(tmp_path: Path) -> None:
    writer = GGUFWriter(tmp_path / "a.gguf", "llama")
    writer.add_custom_alignment(256)
    writer.add_tensor("a", np.ones(3, dtype=np.float32))
    writer.add_tensor("b", np.ones(5, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with LocalFileSource(tmp_path / "a.gguf") as source:
        facts = parse_model(source)

    assert facts.alignment == 256
    assert [t.offset for t in facts.tensors] == [0, 256]
    assert facts.shards[0].data_offset % 256 == 0


def test_hostile_metadata_types_do_not_break_the_facts() -> None:
    kvs = [
        ARCH,
        kv_str("llama.block_count", "eighty"),
        kv_array("llama.attention.head_count", STRING, [gstr("x")]),
        kv("llama.attention.head_count_kv", 7, b"\1"),
        kv_u32("llama.embedding_length", 64),
        kv("llama.context_length", 6, b"\0\0\xc0\x7f"),  # float32 NaN
    ]
    facts = parse(gguf(kvs, [tensor_info("blk.7.x", [32], F32)], data=b"\0" * 128))

    assert facts.block_count is None and facts.head_count is None
    assert facts.head_count_kv is None and facts.key_length is None
    assert facts.context_length is None
    assert facts.bytes_per_layer == (0,) * 7 + (128,)


def test_a_long_array_of_arrays_is_summarised_without_keeping_its_items() -> None:
    empty = u32(UINT8) + u64(0)
    data = gguf([ARCH, kv_array("nested", ARRAY, [empty] * 50_000)])
    tracemalloc.start()
    facts = parse(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert facts.metadata["nested"] == ArraySummary("array", 50_000)
    assert peak < 4 * len(data)
