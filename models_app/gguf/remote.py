"""Reading a remote GGUF header with HTTP Range requests (httpx).

Only the bytes the header needs are fetched: 256 KiB first, then chunks that
double, within the parser's ``max_header_bytes`` limit. A server that answers a
Range request with the whole file (HTTP 200) is refused, not downloaded, unless
that file is no bigger than the range asked for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import httpx

from models_app.fetch_guard import guarded_client
from models_app.gguf.errors import GGUFRemoteError
from models_app.gguf.sources import SourceBase
from models_app.retrying import (
    CONNECT_TIMEOUT,
    RetryPolicy,
    TransientFailure,
    retry_after,
    with_retries,
)

REMOTE_INITIAL_CHUNK = 256 * 1024
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=CONNECT_TIMEOUT)
log = logging.getLogger(__name__)
_TRANSIENT = (408, 425, 429)


def header_retry_policy() -> RetryPolicy:
    """Retries of a header read after a 5xx or 429: as the download engine does, with
    backoff and ``Retry-After`` honoured, but bounded for a request someone waits on
    (3 attempts, waits of at most 4 s each: under 10 s in all)."""
    return RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0)


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


class HttpRangeSource(SourceBase):
    """A remote file read through ``Range: bytes=a-b`` requests.

    ``headers`` (e.g. ``Authorization``) go with every request; redirects are
    followed. Pass ``client`` to share connections; otherwise one is made (through the
    fetch guard, every hop) and closed by ``close()``. ``bytes_received`` and
    ``requests`` count the traffic. ``size``, when the caller knows it (a hub's
    ``X-Linked-Size``), keeps the first request from asking past the end of the file.
    A 5xx or 429 answer is retried per ``retry`` (``header_retry_policy()``).
    """

    complete = True

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
        initial_chunk: int = REMOTE_INITIAL_CHUNK,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        size: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = url
        self.retry = retry or header_retry_policy()
        self.name = _redact(url)
        self.initial_chunk = initial_chunk
        self._headers = dict(headers or {})
        self._owns_client = client is None
        self._client = client or guarded_client(follow_redirects=True, timeout=timeout)
        self._size: int | None = size
        self.bytes_received = 0
        self.requests = 0

    def size(self) -> int | None:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0 or (self._size is not None and offset >= self._size):
            return b""
        if self._size is not None:
            length = min(length, self._size - offset)  # never ask past the known end
        headers = {
            **self._headers,
            "Range": f"bytes={offset}-{offset + length - 1}",
            "Accept-Encoding": "identity",
        }
        try:
            return with_retries(lambda _: self._read_once(headers, offset, length), self.retry)
        except TransientFailure as error:
            raise GGUFRemoteError(str(error)) from error

    def _read_once(self, headers: dict[str, str], offset: int, length: int) -> bytes:
        self.requests += 1
        try:
            with self._client.stream(
                "GET", self.url, headers=headers, follow_redirects=True
            ) as response:
                return self._body(response, offset, length)
        except httpx.HTTPError as exc:
            # One message for every network failure: refused, timed out, reset … would
            # tell an open port from a closed one. The detail goes to the log.
            log.warning("reading %s failed: %r", self.name, exc)
            message = f"cannot read {self.name}: the server could not be reached"
            raise GGUFRemoteError(message) from exc

    def _body(self, response: httpx.Response, offset: int, length: int) -> bytes:
        status = response.status_code
        if status == 416:
            self._size = _content_range(response)[1]
            return b""
        if status == 200 and _is_whole_small_file(response, offset, length):
            self._size = int(response.headers["content-length"])
            return self._received(_read_at_most(response, length))
        if status == 200:
            raise GGUFRemoteError(
                f"{self.name} ignored the Range request (HTTP 200, whole file): the server does "
                "not support partial downloads, so the header cannot be read remotely"
            )
        if status in _TRANSIENT or status >= 500:
            raise TransientFailure(
                f"cannot read {self.name}: HTTP {status} {response.reason_phrase}",
                retry_after=retry_after(response.headers),
            )
        if status != 206:
            raise GGUFRemoteError(
                f"cannot read {self.name}: HTTP {status} {response.reason_phrase}"
            )
        start, total = _content_range(response)
        if start != offset:
            raise GGUFRemoteError(f"{self.name} sent bytes from {start}, asked for {offset}")
        self._size = total
        return self._received(_read_at_most(response, length))

    def _received(self, data: bytes) -> bytes:
        self.bytes_received += len(data)
        return data

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _is_whole_small_file(response: httpx.Response, offset: int, length: int) -> bool:
    """A 200 answer is fine when it is the whole file and no more than was asked for."""
    declared = response.headers.get("content-length", "")
    return offset == 0 and declared.isdigit() and int(declared) <= length


def _read_at_most(response: httpx.Response, length: int) -> bytes:
    chunks: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        received += len(chunk)
        if received >= length:
            break
    return b"".join(chunks)[:length]


def _content_range(response: httpx.Response) -> tuple[int | None, int | None]:
    """(first byte, total size) from Content-Range; None where the server gives '*'."""
    header = response.headers.get("content-range", "")
    match = _CONTENT_RANGE.match(header)
    if not match:
        raise GGUFRemoteError(
            f"bad or missing Content-Range header {header!r} (HTTP {response.status_code})"
        )
    start, _end, total = match.groups()
    return (
        None if start is None else int(start),
        None if total == "*" else int(total),
    )


def _redact(url: str) -> str:
    """The URL without credentials or query string (which may hold signed tokens)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))
