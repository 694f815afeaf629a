"""Byte sources: where the header bytes come from.

The parser only ever asks a source for a byte range near the start of a file,
so a model can be judged from a local file, a file that is still downloading,
or a remote URL (see ``remote.py``) without reading its tensor data.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

from models_app.gguf.errors import GGUFError

LOCAL_INITIAL_CHUNK = 1 << 20


@runtime_checkable
class ByteSource(Protocol):
    """A readable file-like thing the parser can ask for byte ranges.

    ``name`` is shown in errors. ``initial_chunk`` is the size of the first read;
    the parser doubles it while the header needs more. ``complete`` says the whole
    file is present, so the data section must fit in ``size()``.
    """

    name: str
    initial_chunk: int
    complete: bool

    def size(self) -> int | None:
        """The total size in bytes, or None while unknown."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; fewer only at the end of the file."""
        ...

    def close(self) -> None:
        """Release the file handle or connection."""
        ...


class SourceBase:
    """Context manager support shared by the sources."""

    def close(self) -> None:
        """Nothing to release by default."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BytesSource(SourceBase):
    """An in-memory file (tests, or a header already fetched elsewhere)."""

    def __init__(self, data: bytes, name: str = "<bytes>", *, complete: bool = True) -> None:
        self._data = bytes(data)
        self.name = name
        self.initial_chunk = LOCAL_INITIAL_CHUNK
        self.complete = complete

    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + max(length, 0)]


class LocalFileSource(SourceBase):
    """A complete file on a local disk."""

    complete = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.initial_chunk = LOCAL_INITIAL_CHUNK
        try:
            self._file: BinaryIO = self.path.open("rb")
            self._size = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            raise GGUFError(f"cannot open {self.name}: {exc.strerror or exc}") from exc

    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        length = min(length, self._size - offset)
        if length <= 0:
            return b""
        try:
            self._file.seek(offset)
            return self._file.read(length)
        except OSError as exc:
            raise GGUFError(f"cannot read {self.name}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        self._file.close()


class PartialFileSource(LocalFileSource):
    """A local file that may still be downloading.

    Reads like ``LocalFileSource``, but the tensor data need not be there yet: only
    the header has to fit, and a header that runs past the bytes on disk raises
    ``GGUFIncompleteError`` with the number of bytes needed.
    """

    complete = False
