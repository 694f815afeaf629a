"""The HTTP client of the engine, HTTP status → error mapping, and plain-URL resolution.

httpcore reads a response 64 KiB per ``recv()``; for a multi-GiB body the per-read
Python work (h11 events, buffer copies) costs about 0.35 s of CPU per GiB, which on
a 2-core machine is the difference between ~70 % and ~100 % of curl's throughput
(``bench/download``). ``open_client`` therefore gives httpx a network backend whose
streams read up to ``READ_SIZE`` per call: h11 accepts any amount of data, and only
this client is affected (patching httpcore's class attribute would change every
httpx client in the process, the gateway's included).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from models_app.fetch_guard import FetchRefused, GuardedBackend
from models_app.retrying import CONNECT_TIMEOUT, retry_after
from models_app.transfer.errors import (
    AddressRefused,
    NotFound,
    TransferError,
    TransientError,
    Unauthorized,
)
from models_app.transfer.sources import (
    RemoteFile,
    sha256_or_none,
    strong_etag,
    url_label,
    validate_url,
)

READ_SIZE = 1024 * 1024
"""Most bytes taken from the socket per read, hence the largest chunk written at once."""

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=CONNECT_TIMEOUT)
USER_AGENT = f"gpufleet-downloader (httpx/{httpx.__version__})"


def transport_errors() -> tuple[type[Exception], ...]:
    """Network failures (connect, read, timeout, dropped connection) of both HTTP stacks:
    the engine speaks httpx; huggingface_hub 2.x speaks its successor httpx2."""
    errors: list[type[Exception]] = [httpx.TransportError]
    try:
        import httpx2

        errors.append(httpx2.TransportError)
    except ImportError:  # huggingface_hub 1.x: httpx only
        pass
    return tuple(errors)


def _of_both_stacks(name: str) -> tuple[type[Exception], ...]:
    """The exception class ``name`` of httpx and, when installed, of httpx2."""
    classes: list[type[Exception]] = [getattr(httpx, name)]
    try:
        import httpx2

        classes.append(getattr(httpx2, name))
    except ImportError:
        pass
    return tuple(classes)


_NAME_NOT_FOUND = re.compile(
    r"name or service not known|nodename nor servname|name resolution|no address associated"
    r"|getaddrinfo failed",
    re.IGNORECASE,
)


def unreachable_reason(error: Exception) -> str:
    """Why no answer came, in a few words, for a server the operator configured (the
    hub). URLs that people give get ``network_error``'s vaguer message instead."""
    if isinstance(error, _of_both_stacks("ConnectTimeout")):
        return f"no connection within {CONNECT_TIMEOUT:g} s"
    if isinstance(error, _of_both_stacks("TimeoutException")):
        return "it accepted the connection but did not answer in time"
    text = str(error)
    if "refused" in text.lower():
        return "connection refused"
    if _NAME_NOT_FOUND.search(text):
        return "its host name could not be resolved"
    return text or type(error).__name__


def open_client(timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> httpx.Client:
    """An httpx client reading ``READ_SIZE`` at a time, following redirects, through the
    fetch guard: every connection (each redirect hop) goes only to a vetted address.

    httpx drops the Authorization header when a redirect leaves the origin, so a
    hub token never reaches a CDN.
    """
    return httpx.Client(
        transport=_LargeReadTransport(),
        timeout=timeout,
        follow_redirects=True,
        headers={"User-Agent": USER_AGENT},
    )


def network_error(error: httpx.RequestError, label: str) -> TransferError:
    """A request that got no usable answer: transient (retried) unless retrying cannot
    help (a redirect loop, a redirect to a scheme httpx does not speak)."""
    if isinstance(error, httpx.UnsupportedProtocol | httpx.TooManyRedirects | httpx.DecodingError):
        return TransferError(f"{label}: {_describe(error)}")
    # One message for refused, reset, timed out …: which would tell an open port from a
    # closed one. The detail goes to the log.
    log.warning("%s: %r", label, error)
    return TransientError(f"{label}: the server could not be reached")


def refused(error: FetchRefused, label: str) -> AddressRefused:
    return AddressRefused(f"{label}: {error.message}")


def error_for_status(response: httpx.Response, label: str) -> TransferError:
    """The error for a failed response (caller has checked it is not 2xx/3xx)."""
    status = response.status_code
    sent_token = "authorization" in response.request.headers
    if status in (401, 403):
        why = "the token was refused" if sent_token else "no token was given"
        return Unauthorized(f"{label}: access refused (HTTP {status}; {why})")
    if status in (404, 410):
        return NotFound(f"{label}: not found (HTTP {status})")
    if status in (408, 425, 429) or status >= 500:
        return TransientError(
            f"{label}: server error (HTTP {status})", retry_after=retry_after(response.headers)
        )
    return TransferError(f"{label}: unexpected answer (HTTP {status})")


def resolve_url(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    sha256: str | None = None,
    client: httpx.Client | None = None,
) -> RemoteFile:
    """HEAD a plain http(s) URL (following redirects) for its size, ETag and final URL.

    Servers that refuse HEAD (405/501) are downloaded blind: size unknown, checked
    only by ``sha256`` when the caller knows it. An ``X-Linked-Etag`` seen on the
    way (a hub resolve URL given as a plain URL) supplies the sha256 and size.
    """
    label = url_label(validate_url(url))
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    with _client_or(client) as http:
        try:
            response = http.head(url, headers=sent)
        except FetchRefused as error:
            raise refused(error, label) from error
        except httpx.RequestError as error:
            raise network_error(error, label) from error
    if response.status_code in (405, 501):
        return RemoteFile(url=url, label=label, sha256=sha256, headers=sent)
    if response.is_error:
        raise error_for_status(response, label)
    return _remote_from_head(response, label, sent, sha256)


def _remote_from_head(
    response: httpx.Response, label: str, headers: dict[str, str], sha256: str | None
) -> RemoteFile:
    linked = {k.lower(): v for r in response.history for k, v in r.headers.items()}
    size = linked.get("x-linked-size") or _plain_length(response)
    return RemoteFile(
        url=str(response.url),
        label=label,
        size=int(size) if size and size.isdigit() else None,
        sha256=sha256 or sha256_or_none(linked.get("x-linked-etag")),
        etag=strong_etag(response.headers.get("etag")),
        commit=linked.get("x-repo-commit"),
        headers=headers,
    )


def _plain_length(response: httpx.Response) -> str | None:
    if response.headers.get("content-encoding", "identity") != "identity":
        return None
    return response.headers.get("content-length")


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__


@contextmanager
def _client_or(client: httpx.Client | None) -> Iterator[httpx.Client]:
    """``client`` as is (its owner closes it), or a fresh one closed on exit."""
    if client is not None:
        yield client
        return
    with open_client() as own:
        yield own


class _LargeReadStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max(max_bytes, READ_SIZE), timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _LargeReadStream(self._inner.start_tls(*args, **kwargs))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _LargeReadBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _LargeReadStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _LargeReadStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _LargeReadTransport(httpx.HTTPTransport):
    """httpx's transport with ``_LargeReadBackend`` behind the fetch guard (httpx exposes
    no backend argument, so the connection pool it built is replaced by the same pool with
    our backend)."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=GuardedBackend(inner=_LargeReadBackend()),
        )
