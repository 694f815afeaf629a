"""sha256 of a file while it is being written, on a second thread that reads it back.

Hashing costs about 0.6 s of CPU per GiB; done inline it serialises with the
socket reads and disk writes and caps a 2-core machine at ~75 % of curl's
throughput. hashlib releases the GIL for large buffers, so a worker thread
overlaps it with the transfer (``bench/download``).

The worker reads the file back (from the page cache, into one reused buffer)
instead of being handed the downloaded chunks: no chunk is kept alive for it, so
memory stays flat (handing over chunks made glibc return freed memory to the
kernel and fault it in again, ~100k page faults and ~10 % slower per GiB), and
re-hashing a resumed partial file is the same loop, running while the download
already continues. What is hashed is what is on disk.
"""

from __future__ import annotations

import hashlib
import threading
from io import FileIO
from pathlib import Path
from types import TracebackType

BLOCK = 8 * 1024 * 1024


class FileHasher:
    """sha256 of a file's first ``target`` bytes, as they are written.

    ``sync(path, length)`` says which file and that its first ``length`` bytes are
    final (a smaller length than before means the file was cut: the hash starts
    over); ``advance(length)`` that it has grown; ``hexdigest`` waits for the
    worker to catch up.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._hashed = 0
        self._target = 0
        self._path: Path | None = None
        self._file: FileIO | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._changed = threading.Condition()
        self._busy = threading.Lock()  # held while a block is read and hashed
        self._buffer = memoryview(bytearray(BLOCK))
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def __enter__(self) -> FileHasher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def count(self) -> int:
        """Bytes the hash will cover once the worker has caught up."""
        return self._target

    def sync(self, path: Path, length: int) -> None:
        """Hash ``path``'s first ``length`` bytes (already hashed ones are kept if
        ``path`` is the same file and was not cut below them)."""
        with self._busy, self._changed:
            self._close_file()  # the file may have been replaced since it was opened
            if path != self._path or length < self._hashed:
                self._sha, self._hashed, self._path = hashlib.sha256(), 0, path
            self._target = length
            self._changed.notify()

    def advance(self, length: int) -> None:
        """The file now holds ``length`` bytes (it only grows between ``sync`` calls)."""
        with self._changed:
            self._raise_error()
            self._target = length
            self._changed.notify()

    def hexdigest(self) -> str:
        """The sha256 of the first ``count`` bytes, once the worker has read them."""
        with self._changed:
            self._changed.wait_for(lambda: self._hashed >= self._target or self._error)
            self._raise_error()
            return self._sha.hexdigest()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()
        self._close_file()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closed or self._hashed < self._target)
                if self._closed:
                    return
            try:
                self._hash_next_block()
            except BaseException as error:
                with self._changed:
                    self._error = error
                    self._changed.notify_all()  # wake a hexdigest() already waiting
                    self._changed.wait_for(lambda: self._closed)
                    return

    def _hash_next_block(self) -> None:
        with self._busy:
            wanted = min(BLOCK, self._target - self._hashed)
            if wanted <= 0 or self._path is None:
                return
            if self._file is None:
                self._file = FileIO(self._path, "r")
            self._file.seek(self._hashed)
            got = self._file.readinto(self._buffer[:wanted]) or 0
            if got == 0:
                raise OSError(f"{self._path} is shorter than {self._target} bytes")
            self._sha.update(self._buffer[:got])
            with self._changed:
                self._hashed += got
                self._changed.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
