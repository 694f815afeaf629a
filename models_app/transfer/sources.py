"""What to download: a file in a Hugging Face repo, or a plain URL, and its resolution.

``HfFile`` and plain URLs are what an operator asks for; ``RemoteFile`` is what
resolution found out (where the bytes are, how many, their sha256), which is all the
streaming engine needs. Sources are validated before any request so that a typo
fails with a clear message instead of an HTTP error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from huggingface_hub import constants
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from models_app.transfer.errors import InvalidSource

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HfFile:
    """One file of a Hugging Face model repo at a revision (branch, tag or commit).

    ``endpoint`` defaults to ``HF_ENDPOINT`` (read now, not at import as
    huggingface_hub does), else huggingface_hub's configured endpoint. The token is
    sent only to the hub itself, never to the CDN it redirects to.
    """

    repo_id: str
    filename: str
    revision: str = "main"
    token: str | None = field(default=None, repr=False)
    endpoint: str | None = None

    def __post_init__(self) -> None:
        validate_repo(self.repo_id, self.revision)
        _validate_filename(self.filename)

    @property
    def hub(self) -> str:
        """The hub's base URL, without a trailing slash."""
        return hub_endpoint(self.endpoint)

    @property
    def label(self) -> str:
        """How messages name this file: ``repo: file @ revision``."""
        return f"{self.repo_id}: {self.filename} @ {self.revision}"

    def with_filename(self, filename: str) -> HfFile:
        return replace(self, filename=filename)

    def pinned(self, commit: str | None) -> HfFile:
        """The same file at ``commit``, so that retries and sibling shards cannot see a
        branch that moved in the meantime."""
        return replace(self, revision=commit) if commit and _COMMIT.match(commit) else self


@dataclass(frozen=True)
class RemoteFile:
    """A resolved file: GET ``url`` with ``headers`` to receive ``size`` bytes.

    ``etag`` is a strong validator *for url* (quoted, as sent in ``If-Range``), or
    None when unknown: the hub's ETag of an LFS file names the blob, not the CDN's
    copy, so it is not usable there. ``sha256`` is the content hash when the source
    publishes one; ``commit`` the hub's commit for the revision asked for.
    """

    url: str
    label: str
    size: int | None = None
    sha256: str | None = None
    etag: str | None = None
    commit: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


def sha256_or_none(value: str | None) -> str | None:
    """``value`` lower-cased when it is a sha256 in hex (an LFS ETag is), else None."""
    text = (value or "").removeprefix("W/").strip('"').lower()
    return text if _SHA256.match(text) else None


def strong_etag(value: str | None) -> str | None:
    """The ETag as ``If-Range`` needs it (quoted), or None when absent or weak."""
    if not value or value.startswith("W/"):
        return None
    return value if value.startswith('"') else f'"{value}"'


def validate_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSource(f"not an http(s) URL: {url!r}")
    return url


def url_label(url: str) -> str:
    """A URL without its query string (which may hold a signature) for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def same_origin(first: str, second: str) -> bool:
    """True when both URLs have the same scheme, host and port (where tokens may go)."""
    a, b = urlsplit(first), urlsplit(second)
    default = {"http": 80, "https": 443}
    return (a.scheme, a.hostname, a.port or default.get(a.scheme)) == (
        b.scheme,
        b.hostname,
        b.port or default.get(b.scheme),
    )


def hub_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``HF_ENDPOINT`` as set now, else huggingface_hub's endpoint."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def validate_repo(repo_id: str, revision: str) -> None:
    """Refuse a malformed repo id or revision (huggingface_hub's own rules for ids)."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise InvalidSource(f"invalid repo id {repo_id!r}: {error}") from None
    if not revision or any(ord(c) < 32 for c in revision):
        raise InvalidSource(f"invalid revision {revision!r}")


def _validate_filename(filename: str) -> None:
    parts = filename.split("/")
    if (
        not filename
        or filename.startswith("/")
        or "\\" in filename
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(c) < 32 for c in filename)
    ):
        raise InvalidSource(f"invalid file name {filename!r}: expected a relative path in the repo")
