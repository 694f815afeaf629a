"""Metadata values: GGUF key/value types decoded into plain Python data.

Big arrays (tokenizer arrays, anything longer than ``Limits.keep_array_items``)
are not kept: they become an ``ArraySummary`` that records the item type and
length, and string arrays are skipped without being decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from models_app.gguf.errors import GGUFFormatError, GGUFLimitError
from models_app.gguf.reader import Cursor

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL = range(8)
STRING, ARRAY, UINT64, INT64, FLOAT64 = range(8, 13)

TYPE_NAMES = {
    UINT8: "uint8",
    INT8: "int8",
    UINT16: "uint16",
    INT16: "int16",
    UINT32: "uint32",
    INT32: "int32",
    FLOAT32: "float32",
    BOOL: "bool",
    STRING: "string",
    ARRAY: "array",
    UINT64: "uint64",
    INT64: "int64",
    FLOAT64: "float64",
}
_SCALAR_FORMATS = {
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    BOOL: "B",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}
_SCALARS = {vtype: struct.Struct("<" + fmt) for vtype, fmt in _SCALAR_FORMATS.items()}
_DTYPES = {vtype: np.dtype("<" + fmt) for vtype, fmt in _SCALAR_FORMATS.items()}
_ARRAY_HEAD_BYTES = 12  # item type (u32) + length (u64)
_STRING_HEAD_BYTES = 8


@dataclass(frozen=True, slots=True)
class ArraySummary:
    """A metadata array that was too big to keep: its item type and length."""

    item_type: str
    length: int

    def to_dict(self) -> dict[str, str | int]:
        return {"item_type": self.item_type, "length": self.length}


MetaValue: TypeAlias = bool | int | float | str | list["MetaValue"] | ArraySummary


def meta_from_plain(value: Any) -> MetaValue:
    """A metadata value back from its ``to_dict`` form (summaries are dicts there)."""
    if isinstance(value, dict):
        return ArraySummary(str(value["item_type"]), int(value["length"]))
    if isinstance(value, list):
        return [meta_from_plain(item) for item in value]
    result: MetaValue = value
    return result


def min_value_bytes(vtype: int) -> int:
    """The fewest bytes a value of ``vtype`` can take in a file."""
    if vtype == STRING:
        return _STRING_HEAD_BYTES
    if vtype == ARRAY:
        return _ARRAY_HEAD_BYTES
    return _SCALARS[vtype].size


def check_value_type(vtype: int, where: str) -> None:
    if vtype not in TYPE_NAMES:
        raise GGUFFormatError(f"unknown value type {vtype} in {where}")


def read_value(cursor: Cursor, vtype: int, key: str) -> MetaValue:
    """Decode one value of type ``vtype`` for metadata key ``key``."""
    check_value_type(vtype, f"key {key!r}")
    if vtype == STRING:
        return _read_text(cursor)
    if vtype == ARRAY:
        budget = 0 if key.startswith("tokenizer.") else cursor.limits.keep_array_items
        return _read_array(cursor, key, depth=1, budget=budget)
    (value,) = cursor.unpack(_SCALARS[vtype])
    return bool(value) if vtype == BOOL else value


def _read_text(cursor: Cursor) -> str:
    raw = cursor.string(cursor.limits.max_string_bytes)
    return raw.decode("utf-8", errors="replace")


def _read_array(cursor: Cursor, key: str, depth: int, budget: int) -> MetaValue:
    """An array, kept when its items fit in ``budget`` (shared with nested arrays)."""
    limits = cursor.limits
    item_type = cursor.u32()
    length = cursor.u64()
    check_value_type(item_type, f"array {key!r}")
    if item_type == ARRAY and depth >= limits.max_array_depth:
        raise GGUFLimitError(f"array {key!r} nests deeper than {limits.max_array_depth} levels")
    cursor.check_count(
        f"array {key!r} item", length, limits.max_array_items, min_value_bytes(item_type)
    )
    keep = length <= budget
    if item_type == STRING:
        return _read_string_items(cursor, length, keep)
    if item_type == ARRAY:
        return _read_nested(cursor, key, depth, length, budget // max(length, 1) if keep else 0)
    return _read_scalar_items(cursor, item_type, length, keep)


def _read_nested(cursor: Cursor, key: str, depth: int, length: int, budget: int) -> MetaValue:
    if not budget:
        for _ in range(length):
            _read_array(cursor, key, depth + 1, 0)
        return ArraySummary("array", length)
    return [_read_array(cursor, key, depth + 1, budget) for _ in range(length)]


def _read_string_items(cursor: Cursor, length: int, keep: bool) -> MetaValue:
    if keep:
        return [_read_text(cursor) for _ in range(length)]
    cursor.skip_strings(length)
    return ArraySummary("string", length)


def _read_scalar_items(cursor: Cursor, item_type: int, length: int, keep: bool) -> MetaValue:
    size = _SCALARS[item_type].size
    if not keep:
        cursor.skip(length * size)
        return ArraySummary(TYPE_NAMES[item_type], length)
    raw = cursor.take(length * size)
    values = np.frombuffer(raw, dtype=_DTYPES[item_type], count=length)
    if item_type == BOOL:
        return [bool(v) for v in values.tolist()]
    items: list[MetaValue] = values.tolist()
    return items
