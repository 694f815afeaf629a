"""ggml tensor types and llama.cpp file types, from the ``gguf`` package tables."""

from __future__ import annotations

from collections.abc import Sequence

from gguf.constants import GGML_QUANT_SIZES, LlamaFileType

from models_app.gguf.errors import GGUFFormatError

INT64_MAX = (1 << 63) - 1
MAX_DIMS = 4

# type id -> (name, block size, type size)
TENSOR_TYPES: dict[int, tuple[str, int, int]] = {
    int(qtype): (qtype.name, block, size) for qtype, (block, size) in GGML_QUANT_SIZES.items()
}

# llama_ftype values that llama.cpp once wrote and ``LlamaFileType`` no longer lists.
_RETIRED_FILE_TYPES = {
    4: "Q4_1_SOME_F16",
    5: "Q4_2",
    6: "Q4_3",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
}
_GUESSED = int(LlamaFileType.GUESSED)


def _file_type_label(ftype: LlamaFileType) -> str:
    return ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")


FILE_TYPES: dict[int, str] = {
    int(ftype): _file_type_label(ftype) for ftype in LlamaFileType if ftype != _GUESSED
} | _RETIRED_FILE_TYPES


def file_type_name(ftype: int) -> str:
    """llama.cpp's name for a ``general.file_type`` value, e.g. 15 -> ``Q4_K_M``."""
    name = FILE_TYPES.get(ftype & ~_GUESSED)
    if name is None:
        return f"unknown({ftype})"
    return f"{name} (guessed)" if ftype & _GUESSED else name


def tensor_type_name(type_id: int) -> str:
    """The ggml name of a tensor type id, e.g. 12 -> ``Q4_K``."""
    entry = TENSOR_TYPES.get(type_id)
    return entry[0] if entry else f"unknown({type_id})"


def element_count(name: str, shape: Sequence[int]) -> int:
    """The element count of a tensor, checked as ggml does (1..4 positive dims, no overflow)."""
    if not 1 <= len(shape) <= MAX_DIMS:
        raise GGUFFormatError(f"tensor {name!r} has {len(shape)} dimensions (must be 1 to 4)")
    count = 1
    for dim in shape:
        if dim <= 0 or dim > INT64_MAX:
            raise GGUFFormatError(f"tensor {name!r} has an invalid dimension {dim}")
        count *= dim
    if count > INT64_MAX:
        raise GGUFFormatError(f"tensor {name!r} element count {count} overflows int64")
    return count


def tensor_nbytes(name: str, shape: Sequence[int], type_id: int) -> int:
    """Bytes a tensor takes, computed as ggml does: ne0 / block * type_size * ne1 * ne2 * ne3."""
    entry = TENSOR_TYPES.get(type_id)
    if entry is None:
        raise GGUFFormatError(f"tensor {name!r} has an unknown type {type_id}")
    type_name, block, size = entry
    element_count(name, shape)
    if shape[0] % block:
        raise GGUFFormatError(
            f"tensor {name!r} of type {type_name} has a row of {shape[0]} elements, "
            f"not a multiple of the block size {block}"
        )
    nbytes = shape[0] // block * size
    for dim in shape[1:]:
        nbytes *= dim
    if nbytes > INT64_MAX:
        raise GGUFFormatError(f"tensor {name!r} byte size {nbytes} overflows int64")
    return nbytes
