"""Skipping arrays of length-prefixed strings fast (tokenizer tokens and merges).

A 128k-token vocabulary and its merges are ~400,000 strings; walking them one
by one in Python is the slowest part of reading a header. ``skip_vectorised``
finds the length prefixes with numpy instead, and proves the result: it only
accepts a chain of starts where each start plus its length prefix lands exactly
on the next start, beginning at the known current position. Wherever the chain
cannot be proven (strings holding runs of NUL bytes, empty strings, lengths of
16 MiB or more), it stops and the caller walks those strings one at a time.
"""

from __future__ import annotations

import struct

import numpy as np

from models_app.gguf.errors import GGUFLimitError

_STR_HEAD = struct.Struct("<II")  # a u64 length read as (low, high) halves
_PREFIX = 8
_SHORT_LENGTH = 1 << 24  # lengths below this have bytes 3..7 of their prefix zero


def skip_scalar(buf: bytearray, pos: int, batch: int, max_len: int) -> tuple[int, int]:
    """Skip up to ``batch`` strings that start inside ``buf``; return (pos, skipped).

    Stops early when the next prefix is not in ``buf`` (the caller loads more).
    """
    unpack = _STR_HEAD.unpack_from
    end = len(buf) - _PREFIX
    for done in range(batch):
        if pos > end:
            return pos, done
        low, high = unpack(buf, pos)
        if high or low > max_len:
            length = low | (high << 32)
            raise GGUFLimitError(f"string length {length} is over the limit of {max_len}")
        pos += _PREFIX + low
    return pos, batch


def skip_vectorised(
    buf: bytearray, pos: int, count: int, max_len: int, window: int
) -> tuple[int, int]:
    """Skip up to ``count`` strings from ``pos`` within ``window`` bytes; return (pos, skipped).

    Never raises: where it cannot prove the string boundaries it skips fewer strings.
    """
    starts, lengths = _candidate_prefixes(buf, pos, window)
    if not len(starts) or starts[0] != 0:
        return pos, 0
    ends = starts + _PREFIX + lengths
    linked = (ends[:-1] == starts[1:]) & (lengths[:-1] <= max_len)
    broken = np.flatnonzero(~linked)
    proven = int(broken[0]) if len(broken) else len(linked)
    skipped = min(proven, count)
    return pos + int(starts[skipped]), skipped


def _candidate_prefixes(buf: bytearray, pos: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (from ``pos``) that look like a short length prefix, and those lengths.

    A candidate has bytes 3..7 zero (a length below 16 MiB) and a non-zero byte
    right after the prefix (the first byte of a non-empty string, or of the next prefix).
    """
    size = min(len(buf) - pos, window)
    if size <= _PREFIX:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    view = np.frombuffer(buf, dtype=np.uint8, count=size, offset=pos)
    zero = view == 0
    last = size - _PREFIX  # candidates need the byte after their prefix in the window
    mask = ~zero[_PREFIX : _PREFIX + last]
    for byte in range(3, _PREFIX):
        mask &= zero[byte : byte + last]
    starts = np.flatnonzero(mask)
    lengths = view[starts].astype(np.int64)
    lengths |= view[starts + 1].astype(np.int64) << 8
    lengths |= view[starts + 2].astype(np.int64) << 16
    del view, zero, mask
    return starts.astype(np.int64), lengths
