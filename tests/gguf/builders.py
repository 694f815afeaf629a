"""Hand-made GGUF bytes for tests of broken and hostile files."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from models_app.gguf import BytesSource
from models_app.gguf.values import ARRAY, STRING, UINT32

F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def gstr(text: str | bytes, length: int | None = None) -> bytes:
    """A GGUF string; ``length`` overrides the declared length (to lie about it)."""
    raw = text.encode() if isinstance(text, str) else text
    return u64(len(raw) if length is None else length) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, UINT32, u32(value))


def kv_str(key: str, value: str) -> bytes:
    return kv(key, STRING, gstr(value))


def kv_array(key: str, item_type: int, items: Sequence[bytes], length: int | None = None) -> bytes:
    count = len(items) if length is None else length
    return kv(key, ARRAY, u32(item_type) + u64(count) + b"".join(items))


def tensor_info(
    name: str | bytes, dims: Sequence[int], type_id: int = F32, offset: int = 0
) -> bytes:
    head = gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims)
    return head + u32(type_id) + u64(offset)


def gguf(
    kvs: Sequence[bytes] = (),
    tensors: Sequence[bytes] = (),
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
    n_kv: int | None = None,
    n_tensors: int | None = None,
    data: bytes = b"",
    alignment: int = 32,
) -> bytes:
    """A whole file: preamble, key/values, tensor infos, padding, then ``data``."""
    body = magic + u32(version)
    body += u64(len(tensors) if n_tensors is None else n_tensors)
    body += u64(len(kvs) if n_kv is None else n_kv)
    body += b"".join(kvs) + b"".join(tensors)
    if data:
        body += b"\0" * (-len(body) % alignment) + data
    return body


ARCH = kv_str("general.architecture", "llama")


def one_tensor_file(dims: Sequence[int] = (32,), type_id: int = F32, nbytes: int = 128) -> bytes:
    """A valid file with one tensor ``t`` and its data."""
    return gguf([ARCH], [tensor_info("t", dims, type_id)], data=b"\0" * nbytes)


class CountingSource(BytesSource):
    """Counts the bytes the parser asks for."""

    def __init__(self, data: bytes, *, complete: bool = True) -> None:
        super().__init__(data, complete=complete)
        self.bytes_read = 0

    def read(self, offset: int, length: int) -> bytes:
        data = super().read(offset, length)
        self.bytes_read += len(data)
        return data
