"""One attempt at a download: a (range) GET streamed into the partial file.

Each chunk is written to the partial file before it is counted, hashed or
reported, so what the file holds is always a prefix of the download and a killed
process loses at most the chunk it held (``READ_SIZE``) plus what was still in the
socket buffers. A resumed attempt asks for ``Range: bytes=<size on disk>-``
(with ``If-Range`` when the server gave an ETag) and checks the answer: 206 must
start where asked; 200 means the server ignored the range or the file changed, so
the partial file is started over.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import FileIO

import httpx

from models_app.fetch_guard import FetchRefused
from models_app.transfer.errors import (
    Cancelled,
    RangeNotSatisfiable,
    TransferError,
    TransientError,
    VerificationFailed,
)
from models_app.transfer.hashing import FileHasher
from models_app.transfer.http import error_for_status, network_error, refused
from models_app.transfer.partial import PartialFile, PartialMeta
from models_app.transfer.paths import check_free_space
from models_app.transfer.sources import RemoteFile, strong_etag

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None)."""
StopCheck = Callable[[], bool]
"""Called between chunks (up to ~1000 times a second: keep it cheap)."""

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")


@dataclass
class Progress:
    """Rate-limits the caller's progress callback (it writes a database row).

    Calls come at most every ``interval`` seconds, plus the forced final one;
    ``base`` is added to every figure (the bytes of earlier shards).
    """

    callback: ProgressCallback | None
    total: int | None
    interval: float = 0.5
    base: int = 0
    clock: Callable[[], float] = time.monotonic
    _last: float = field(default=float("-inf"), init=False)

    def update(self, done: int, *, force: bool = False) -> None:
        if self.callback is None:
            return
        now = self.clock()
        if force or now - self._last >= self.interval:
            self._last = now
            self.callback(self.base + done, self.total)


@dataclass
class Fetcher:
    """The state attempts share: client, partial file, hasher and the caller's hooks."""

    client: httpx.Client
    partial: PartialFile
    hasher: FileHasher
    progress: Progress
    should_stop: StopCheck = lambda: False
    space_margin: int = 0
    written: int = field(default=0, init=False)
    """Bytes written by the latest attempt (the retry loop resets its count on progress)."""

    def fetch(self, remote: RemoteFile) -> RemoteFile:
        """Bring the partial file to the end of ``remote``'s content; return ``remote``."""
        self.written = 0
        self._check_stop(remote)
        start = self._reuse_or_discard(remote)
        if remote.size is not None and start == remote.size:
            self.hasher.sync(self.partial.path, start)
            return remote
        if remote.size is not None:
            check_free_space(
                self.partial.path.parent, remote.size - start, margin=self.space_margin
            )
        try:
            with self.client.stream(
                "GET", remote.url, headers=self._headers(remote, start)
            ) as response:
                self._receive(response, remote, start)
        except FetchRefused as error:
            raise refused(error, remote.label) from error
        except httpx.RequestError as error:
            raise network_error(error, remote.label) from error
        return remote

    def _reuse_or_discard(self, remote: RemoteFile) -> int:
        """Bytes on disk worth resuming from; a partial file of another version goes."""
        start = self.partial.size()
        too_long = remote.size is not None and start > remote.size
        if start and (too_long or self.partial.read_meta().conflicts_with(remote)):
            self.partial.discard()
            return 0
        return start

    def _headers(self, remote: RemoteFile, start: int) -> dict[str, str]:
        headers = dict(remote.headers)
        if start:
            headers["Range"] = f"bytes={start}-"
            validator = self.partial.read_meta().etag or remote.etag
            if validator:
                headers["If-Range"] = validator
        return headers

    def _receive(self, response: httpx.Response, remote: RemoteFile, start: int) -> None:
        offset = self._accepted_offset(response, remote, start)
        if offset is None:
            self.hasher.sync(self.partial.path, start)
            return
        etag = strong_etag(response.headers.get("etag")) or remote.etag
        self.partial.write_meta(PartialMeta(remote.sha256, remote.size, etag))
        self.hasher.sync(self.partial.path, offset)
        with self.partial.open_at(offset) as out:
            done = self._copy(response, remote, out, offset)
        self.progress.update(done)
        if remote.size is not None and done < remote.size:
            raise TransientError(
                f"{remote.label}: connection ended at {done} of {remote.size} bytes"
            )

    def _copy(self, response: httpx.Response, remote: RemoteFile, out: FileIO, done: int) -> int:
        for chunk in response.iter_raw():
            self._check_stop(remote, done)
            _write_all(out, chunk)
            done += len(chunk)
            self.written += len(chunk)
            self.hasher.advance(done)
            self.progress.update(done)
        return done

    def _accepted_offset(
        self, response: httpx.Response, remote: RemoteFile, start: int
    ) -> int | None:
        """Where this response's body goes in the file; None when nothing is left to get."""
        status = response.status_code
        if status == 416:
            return self._unsatisfiable(response, remote, start)
        if response.is_error:
            raise error_for_status(response, remote.label)
        if response.headers.get("content-encoding", "identity") != "identity":
            raise TransferError(f"{remote.label}: the server compressed the body")
        if status == 206:
            return self._partial_content(response, remote, start)
        if status == 200:
            self._check_announced(remote, _int(response.headers.get("content-length")))
            return 0
        raise TransferError(f"{remote.label}: unexpected answer (HTTP {status})")

    def _partial_content(self, response: httpx.Response, remote: RemoteFile, start: int) -> int:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if not match or int(match.group(1)) != start:
            self.partial.truncate()
            raise TransientError(
                f"{remote.label}: asked for bytes {start}- but the server answered "
                f"{response.headers.get('content-range')!r}; starting over"
            )
        self._check_announced(remote, _int(match.group(3)))
        return start

    def _unsatisfiable(
        self, response: httpx.Response, remote: RemoteFile, start: int
    ) -> int | None:
        match = _UNSATISFIED_RANGE.match(response.headers.get("content-range", ""))
        server_size = int(match.group(1)) if match else None
        if server_size == start and remote.size in (None, start):
            return None
        raise RangeNotSatisfiable(
            f"{remote.label}: the server cannot resume at byte {start} (it reports "
            f"{server_size if server_size is not None else 'an unknown'} bytes); "
            f"delete {self.partial.path.name} to start over"
        )

    def _check_announced(self, remote: RemoteFile, announced: int | None) -> None:
        if remote.size is not None and announced is not None and announced != remote.size:
            self.partial.discard()
            raise VerificationFailed(
                f"{remote.label}: expected {remote.size} bytes but the server announces "
                f"{announced}; the partial file was deleted"
            )

    def _check_stop(self, remote: RemoteFile, done: int | None = None) -> None:
        if self.should_stop():
            where = f" at {done} of {remote.size or '?'} bytes" if done is not None else ""
            raise Cancelled(f"{remote.label}: cancelled{where}; the partial file is kept")


def _write_all(out: FileIO, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        written = out.write(view)
        if not written:
            raise OSError(f"writing {out.name!r} made no progress")
        view = view[written:]


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
