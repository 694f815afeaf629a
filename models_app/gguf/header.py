"""Reading one GGUF file's header: key/values and tensor infos, never tensor data."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models_app.gguf import ggml
from models_app.gguf.errors import (
    GGUFFormatError,
    GGUFIncompleteError,
    GGUFUnsupportedError,
)
from models_app.gguf.reader import DEFAULT_LIMITS, Cursor, Limits
from models_app.gguf.sources import ByteSource
from models_app.gguf.values import UINT32, MetaValue, read_value

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset
_DIMS = {n_dims: struct.Struct(f"<{n_dims}Q") for n_dims in range(1, ggml.MAX_DIMS + 1)}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor as the header describes it.

    ``shape`` is in ggml order (ne0 first: the row length); ``offset`` is relative to
    the start of the data section of shard ``shard`` (0-based).
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    type_id: int
    n_elements: int
    n_bytes: int
    offset: int
    shard: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "ggml_type": self.ggml_type,
            "type_id": self.type_id,
            "n_elements": self.n_elements,
            "n_bytes": self.n_bytes,
            "offset": self.offset,
            "shard": self.shard,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorInfo:
        """Rebuild a tensor info stored with ``to_dict``."""
        return cls(**{**data, "shape": tuple(data["shape"])})


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    """What one file's header says, before any interpretation.

    ``header_bytes`` is where the tensor infos end, ``data_offset`` where the
    (aligned) data section starts, ``data_bytes`` where the last tensor's data ends
    relative to it.
    """

    source_name: str
    version: int
    metadata: dict[str, MetaValue]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    header_bytes: int
    data_offset: int
    data_bytes: int
    file_size: int | None = field(default=None)

    @property
    def required_size(self) -> int:
        """The smallest size the complete file can have (llama.cpp's bounds check)."""
        if not self.tensors:
            return self.header_bytes
        return self.data_offset + self.data_bytes


def read_header(source: ByteSource, limits: Limits = DEFAULT_LIMITS, shard: int = 0) -> GGUFHeader:
    """Parse the header of one GGUF file. Raises a ``GGUFError`` on anything wrong."""
    cursor = Cursor(source, limits)
    version = _read_preamble(cursor)
    n_tensors, n_kv = cursor.u64(), cursor.u64()
    cursor.check_count("key/value", n_kv, limits.max_kv, _MIN_KV_BYTES)
    cursor.check_count("tensor", n_tensors, limits.max_tensors, _MIN_TENSOR_INFO_BYTES)
    cursor.check_reachable(cursor.pos + n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES)
    metadata = _read_metadata(cursor, n_kv)
    alignment = _alignment(metadata)
    tensors, data_bytes = _read_tensor_infos(cursor, n_tensors, alignment, shard)
    data_offset = _pad(cursor.pos, alignment)
    header = GGUFHeader(
        source_name=source.name,
        version=version,
        metadata=metadata,
        tensors=tensors,
        alignment=alignment,
        header_bytes=cursor.pos,
        data_offset=data_offset,
        data_bytes=data_bytes,
        file_size=source.size(),
    )
    _check_data_fits(source, header)
    return header


def _read_preamble(cursor: Cursor) -> int:
    magic = cursor.take(4)
    if magic != MAGIC:
        raise GGUFFormatError(f"{cursor.source.name} is not a GGUF file (magic {magic!r})")
    version = cursor.u32()
    if version == 1:
        raise GGUFUnsupportedError("GGUF version 1 is not supported: re-convert the model")
    if version not in SUPPORTED_VERSIONS and version & 0xFFFF == 0:
        raise GGUFUnsupportedError("big-endian GGUF files are not supported")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFUnsupportedError(f"GGUF version {version} is not supported (only 2 and 3)")
    return version


def _read_metadata(cursor: Cursor, n_kv: int) -> dict[str, MetaValue]:
    metadata: dict[str, MetaValue] = {}
    for _ in range(n_kv):
        key = cursor.name("metadata key")
        if key in metadata:
            raise GGUFFormatError(f"duplicate metadata key {key!r}")
        vtype = cursor.u32()
        if key == ALIGNMENT_KEY and vtype != UINT32:
            raise GGUFFormatError(f"{ALIGNMENT_KEY} must be a uint32 (value type {vtype})")
        metadata[key] = read_value(cursor, vtype, key)
    return metadata


def _alignment(metadata: dict[str, MetaValue]) -> int:
    value = metadata.get(ALIGNMENT_KEY, DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise GGUFFormatError(f"{ALIGNMENT_KEY} must be a power of two, not {value!r}")
    return value


def _read_tensor_infos(
    cursor: Cursor, count: int, alignment: int, shard: int
) -> tuple[tuple[TensorInfo, ...], int]:
    tensors: list[TensorInfo] = []
    names: set[str] = set()
    expected_offset = 0
    for _ in range(count):
        info = _read_tensor_info(cursor, shard)
        if info.name in names:
            raise GGUFFormatError(f"duplicate tensor name {info.name!r}")
        if info.offset != expected_offset:
            raise GGUFFormatError(
                f"tensor {info.name!r} has data offset {info.offset}, expected {expected_offset}"
            )
        names.add(info.name)
        tensors.append(info)
        expected_offset += _pad(info.n_bytes, alignment)
    data_bytes = tensors[-1].offset + tensors[-1].n_bytes if tensors else 0
    return tuple(tensors), data_bytes


def _read_tensor_info(cursor: Cursor, shard: int) -> TensorInfo:
    name = cursor.name("tensor name")
    n_dims = cursor.u32()
    if not 1 <= n_dims <= ggml.MAX_DIMS:
        raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions (must be 1 to 4)")
    shape: tuple[int, ...] = cursor.unpack(_DIMS[n_dims])
    type_id = cursor.u32()
    offset = cursor.u64()
    n_bytes = ggml.tensor_nbytes(name, shape, type_id)
    n_elements = ggml.element_count(name, shape)
    return TensorInfo(
        name, shape, ggml.tensor_type_name(type_id), type_id, n_elements, n_bytes, offset, shard
    )


def _check_data_fits(source: ByteSource, header: GGUFHeader) -> None:
    end = header.required_size
    size = header.file_size
    if source.complete and size is not None and end > size:
        raise GGUFIncompleteError(source.name, end, size)


def _pad(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment
