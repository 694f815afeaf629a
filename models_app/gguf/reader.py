"""A bounded, buffered cursor over a byte source.

The cursor reads the source from offset 0 in growing chunks (the source's
initial chunk, then doubling) and never past ``Limits.max_header_bytes``.
Every length read from the file is checked against the limits and against the
bytes that can still exist before anything is read or allocated from it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from core.units import MIB
from models_app.gguf.errors import (
    GGUFFormatError,
    GGUFIncompleteError,
    GGUFLimitError,
    GGUFTooShortError,
)
from models_app.gguf.sources import ByteSource
from models_app.gguf.strings import skip_scalar, skip_vectorised

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_FAST_MIN_STRINGS = 64
_FAST_WINDOW = 8 * MIB
_MAX_SLOW_PASSES = 4
_SCALAR_BATCH = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """Safety limits for untrusted headers (all in items or bytes)."""

    max_header_bytes: int = 64 * MIB
    max_tensors: int = 100_000
    max_kv: int = 100_000
    max_string_bytes: int = 16 * MIB
    max_name_bytes: int = 64 * 1024
    max_array_items: int = 1 << 24
    max_array_depth: int = 2
    keep_array_items: int = 1024


DEFAULT_LIMITS = Limits()


def _size_text(size: int) -> str:
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size}-byte"


class Cursor:
    """Reads little-endian GGUF primitives from a source, fetching on demand."""

    def __init__(self, source: ByteSource, limits: Limits = DEFAULT_LIMITS) -> None:
        self.source = source
        self.limits = limits
        self.buf = bytearray()
        self.pos = 0
        self._chunk = max(int(source.initial_chunk), 64)
        self._exhausted = False
        self._slow_passes = 0

    # -- bounds -----------------------------------------------------------------

    def check_reachable(self, end: int) -> None:
        """Raise if byte ``end`` cannot be part of the header, without reading."""
        size = self.source.size()
        if size is not None and end > size:
            raise self._short(end, size)
        if end > self.limits.max_header_bytes:
            raise GGUFLimitError(
                f"the header of {self.source.name} is larger than the "
                f"{_size_text(self.limits.max_header_bytes)} limit (it needs at least {end} bytes)"
            )
        if self._exhausted and end > len(self.buf):
            raise self._short(end, len(self.buf))

    def _short(self, end: int, available: int) -> GGUFIncompleteError:
        """Incomplete (a partial file may grow), or too short (a complete one will not)."""
        kind = GGUFTooShortError if self.source.complete else GGUFIncompleteError
        return kind(self.source.name, end, available)

    def check_count(self, what: str, count: int, cap: int, min_item_bytes: int) -> None:
        """Reject a declared count above ``cap`` or one that cannot fit in the file."""
        if count > cap:
            raise GGUFLimitError(f"{what} count {count} is over the limit of {cap}")
        self.check_reachable(self.pos + count * min_item_bytes)

    def _fill(self, end: int) -> None:
        while len(self.buf) < end:
            self.check_reachable(end)
            have = len(self.buf)
            want = max(self._chunk, end - have)
            want = min(want, self.limits.max_header_bytes - have)
            data = self.source.read(have, want)
            if len(data) > want:
                data = data[:want]
            if not data:
                self._exhausted = True
                raise self._short(end, have)
            self.buf += data
            self._chunk *= 2

    def need(self, count: int) -> None:
        """Make the next ``count`` bytes available in ``buf``."""
        end = self.pos + count
        if end > len(self.buf):
            self._fill(end)

    # -- primitives ---------------------------------------------------------------

    def take(self, count: int) -> bytes:
        """The next ``count`` bytes (the caller has bounded ``count``)."""
        self.need(count)
        start = self.pos
        self.pos = start + count
        return bytes(memoryview(self.buf)[start : self.pos])

    def skip(self, count: int) -> None:
        """Move past the next ``count`` bytes (the caller has bounded ``count``)."""
        self.need(count)
        self.pos += count

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        """Unpack one struct at the cursor."""
        self.need(fmt.size)
        values = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return values

    def u32(self) -> int:
        self.need(4)
        (value,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        self.need(8)
        (value,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(value)

    def string(self, max_bytes: int, what: str = "string") -> bytes:
        """A length-prefixed string, its length checked before it is read."""
        length = self.u64()
        if length > max_bytes:
            raise GGUFLimitError(f"{what} length {length} is over the limit of {max_bytes}")
        self.check_reachable(self.pos + length)
        return self.take(length)

    def name(self, what: str) -> str:
        """A key or tensor name: non-empty, bounded, valid UTF-8."""
        raw = self.string(self.limits.max_name_bytes, what)
        if not raw:
            raise GGUFFormatError(f"empty {what} at offset {self.pos - 8}")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFFormatError(f"{what} at offset {self.pos - len(raw)} is not UTF-8") from exc

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` length-prefixed strings (tokenizer arrays) without decoding them.

        Vectorised passes cover runs whose boundaries numpy can prove; the rest is
        walked one string at a time. Passes that cover little of their window are
        limited per header, so hostile input costs at most a few passes over the buffer.
        """
        max_len = self.limits.max_string_bytes
        left = count
        while left:
            if left >= _FAST_MIN_STRINGS and self._slow_passes < _MAX_SLOW_PASSES:
                left -= self._skip_fast(left, max_len)
            left -= self._skip_slowly(min(left, _SCALAR_BATCH), max_len)
        self.need(0)

    def _skip_fast(self, count: int, max_len: int) -> int:
        start = self.pos
        window = min(len(self.buf) - start, _FAST_WINDOW)
        self.pos, done = skip_vectorised(self.buf, start, count, max_len, window)
        if self.pos - start < window // 4:
            self._slow_passes += 1
        return done

    def _skip_slowly(self, count: int, max_len: int) -> int:
        pos, left = self.pos, count
        while left:
            if pos + 8 > len(self.buf):
                self.pos = pos
                self.need(8)
            batch = min(left, (len(self.buf) - pos) >> 3)
            pos, done = skip_scalar(self.buf, pos, batch, max_len)
            left -= done
        self.pos = pos
        return count
