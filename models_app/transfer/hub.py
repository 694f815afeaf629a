"""Talking to a Hugging Face hub through huggingface_hub: resolve a file, list GGUF models.

huggingface_hub knows the hub's protocol (resolve URLs, which redirects to follow
with the token and which not, where the LFS size and sha256 are) and its errors
(``X-Error-Code``); this module maps both onto the engine's plain data and errors.
The token is passed explicitly (``False`` when there is none), so a token saved on
the machine is never sent by surprise.

Someone usually waits on these requests (adding a model, listing a repo), so a hub that
is down fails fast: ``CONNECT_TIMEOUT`` to connect, and no retry of a connection that
failed (huggingface_hub's own listing retries those for about 24 s). A hub that answers,
however slowly, gets ``HUB_READ_TIMEOUT`` per answer, and a 5xx or 429 answer is retried
a few times with backoff (``HUB_RETRY``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urljoin, urlsplit

import httpx2
from huggingface_hub import get_hf_file_metadata, get_session, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from models_app.gguf.split import shard_locations
from models_app.retrying import CONNECT_TIMEOUT, RetryPolicy, retry_after, with_retries
from models_app.transfer.errors import (
    FileNotFound,
    GatedRepo,
    NotFound,
    RepoNotFound,
    RevisionNotFound,
    TransferError,
    TransientError,
    Unauthorized,
    Unreachable,
)
from models_app.transfer.http import transport_errors, unreachable_reason
from models_app.transfer.sources import (
    HfFile,
    RemoteFile,
    hub_endpoint,
    same_origin,
    sha256_or_none,
    strong_etag,
    validate_repo,
)

HUB_READ_TIMEOUT = 10.0
"""Seconds the hub may take to answer one metadata request once connected (as
huggingface_hub's ``HF_HUB_ETAG_TIMEOUT``)."""
HUB_RETRY = RetryPolicy(attempts=3, base_delay=0.5, max_delay=4.0)
"""Retries of a listing page answered with 5xx or 429: under 10 s in all."""


def hub_timeout(read: float | None = None) -> httpx2.Timeout:
    """One hub request's timeouts: ``CONNECT_TIMEOUT`` to connect, ``read`` (default
    ``HUB_READ_TIMEOUT``) for the answer."""
    read = HUB_READ_TIMEOUT if read is None else read
    return httpx2.Timeout(read, connect=min(CONNECT_TIMEOUT, read))


@dataclass(frozen=True)
class RepoFileInfo:
    """A file in a repo listing; ``sha256`` is known for LFS files."""

    path: str
    size: int | None
    sha256: str | None = None


@dataclass(frozen=True)
class GgufModel:
    """One model of a repo: a single ``.gguf`` file, or all shards of a split model.

    ``name`` is the path without the shard suffix (``q4/m-00001-of-00002.gguf`` →
    ``q4/m.gguf``); ``missing`` lists shards the repo lacks (such a model cannot be
    downloaded whole).
    """

    name: str
    files: tuple[RepoFileInfo, ...]
    missing: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def size(self) -> int | None:
        """Total bytes of all shards, when every shard's size is known."""
        sizes = [info.size for info in self.files]
        if self.missing or any(size is None for size in sizes):
            return None
        return sum(size for size in sizes if size is not None)


def resolve_hf_file(source: HfFile, *, timeout: float | None = None) -> RemoteFile:
    """Where ``source``'s bytes are (the CDN URL for LFS files), their size and sha256.

    One HEAD on the hub's resolve URL, not retried (the download engine retries
    ``TransientError``); huggingface_hub follows redirects within the hub and stops at
    the CDN's, whose response carries ``X-Linked-Size``, ``X-Linked-Etag`` (the sha256)
    and ``X-Repo-Commit``. ``timeout``: for the answer (default ``HUB_READ_TIMEOUT``).
    """
    url = hf_hub_url(source.repo_id, source.filename, revision=source.revision, endpoint=source.hub)
    # huggingface_hub hands ``timeout`` to its httpx2 client as is, and httpx2 takes a
    # Timeout: only so can connecting have its own, shorter limit.
    limits = cast(float, hub_timeout(timeout))
    with translated_hub_errors(source.label, token=bool(source.token), hub=source.hub):
        meta = get_hf_file_metadata(
            url, token=source.token or False, timeout=limits, endpoint=source.hub
        )
    location = urljoin(url, meta.location)
    headers = {"Accept-Encoding": "identity"}
    if source.token and same_origin(location, source.hub):
        headers["Authorization"] = f"Bearer {source.token}"
    return RemoteFile(
        url=location,
        label=source.label,
        size=meta.size,
        sha256=sha256_or_none(meta.etag),
        etag=strong_etag(meta.etag) if location == url else None,
        commit=meta.commit_hash,
        headers=headers,
    )


def list_gguf_models(
    repo_id: str,
    *,
    revision: str = "main",
    token: str | None = None,
    endpoint: str | None = None,
    retry: RetryPolicy | None = None,
) -> list[GgufModel]:
    """The GGUF models of a repo, split shards grouped into one entry each.

    The hub's tree API (``HfApi.list_repo_tree``'s requests, page by page), with this
    module's timeouts and retries: an unreachable hub raises ``Unreachable`` at once."""
    validate_repo(repo_id, revision)
    hub = hub_endpoint(endpoint)
    label = f"{repo_id} @ {revision}"
    url: str | None = f"{hub}/api/models/{repo_id}/tree/{quote(revision, safe='')}"
    params: dict[str, str] | None = {"recursive": "true", "expand": "false"}
    headers = build_hf_headers(token=token or False)
    files: list[RepoFileInfo] = []
    with _network_errors(label, hub):
        while url is not None:
            page = _tree_page(url, params, headers, label, token, retry or HUB_RETRY)
            files += _tree_files(page, label)
            url, params = page.links.get("next", {}).get("url"), None
    return group_gguf_files(files)


def _tree_page(
    url: str,
    params: Mapping[str, str] | None,
    headers: Mapping[str, str],
    label: str,
    token: str | None,
    retry: RetryPolicy,
) -> httpx2.Response:
    """One page of a repo tree. A 5xx or 429 answer is retried per ``retry``; a failed
    connection raises the network's own error at once (not a ``TransientError``)."""

    def attempt(_: int) -> httpx2.Response:
        with _hub_statuses(label, token=bool(token)):
            response = get_session().get(url, params=params, headers=headers, timeout=hub_timeout())
            hf_raise_for_status(response)
        return response

    return with_retries(attempt, retry)


def _tree_files(page: httpx2.Response, label: str) -> list[RepoFileInfo]:
    """The files of a tree page (folders left out)."""
    try:
        entries = page.json()
        return [_info(RepoFile(**entry)) for entry in entries if entry["type"] == "file"]
    except (ValueError, TypeError, KeyError) as error:
        raise TransferError(f"{label}: the hub's answer is not a file listing") from error


def group_gguf_files(files: Iterable[RepoFileInfo]) -> list[GgufModel]:
    """Group ``.gguf`` files into models: ``x-0000N-of-0000M.gguf`` shards become one."""
    by_path = {info.path: info for info in files if info.path.endswith(".gguf")}
    groups: dict[str, list[str]] = {}
    for path in sorted(by_path):
        siblings = shard_locations(path)
        groups.setdefault(siblings[0], siblings)
    return [
        GgufModel(
            name=_model_name(siblings),
            files=tuple(by_path[path] for path in siblings if path in by_path),
            missing=tuple(path for path in siblings if path not in by_path),
        )
        for siblings in groups.values()
    ]


@contextmanager
def translated_hub_errors(label: str, *, token: bool, hub: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's and the network's exceptions into the engine's errors."""
    with _network_errors(label, hub_endpoint(hub)), _hub_statuses(label, token=token):
        yield


@contextmanager
def _network_errors(label: str, hub: str) -> Iterator[None]:
    """A request that got no answer from the hub: ``Unreachable``, saying why."""
    try:
        yield
    except OfflineModeIsEnabled as error:
        raise TransferError(f"{label}: HF_HUB_OFFLINE is set, the hub cannot be reached") from error
    except transport_errors() as error:
        where = _origin(hub)
        reason = unreachable_reason(error)
        raise Unreachable(f"{label}: the hub ({where}) could not be reached: {reason}") from error


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no credentials or path in messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@contextmanager
def _hub_statuses(label: str, *, token: bool) -> Iterator[None]:
    """The hub's error answers (``X-Error-Code``, status) as the engine's errors."""
    try:
        yield
    except GatedRepoError as error:
        how = "with the account of this token" if token else "then give a token"
        raise GatedRepo(
            f"{label}: the repository is gated; accept its conditions on the hub, {how}"
        ) from error
    except RepositoryNotFoundError as error:
        hint = "or this token cannot see it" if token else "or it is private: give a token"
        raise RepoNotFound(f"{label}: repository not found, {hint}") from error
    except RevisionNotFoundError as error:
        raise RevisionNotFound(f"{label}: revision not found in the repository") from error
    except EntryNotFoundError as error:
        raise FileNotFound(f"{label}: file not found at this revision") from error
    except HfHubHTTPError as error:
        raise _from_hub_status(error, label, token=token) from error


def _from_hub_status(error: HfHubHTTPError, label: str, *, token: bool) -> TransferError:
    response = error.response
    status = response.status_code if response is not None else 0
    if status in (401, 403):
        why = "the token was refused" if token else "a token is needed"
        return Unauthorized(f"{label}: access refused (HTTP {status}; {why})")
    if status in (408, 425, 429) or status >= 500:
        wait = retry_after(response.headers) if response is not None else None
        return TransientError(f"{label}: hub error (HTTP {status})", retry_after=wait)
    reason = (error.server_message or "").strip()
    if status in (404, 410):
        detail = f" ({reason})" if reason else ""
        return NotFound(f"{label}: not found on the hub{detail}")
    if reason:
        return TransferError(f"{label}: the hub answered HTTP {status}: {reason}")
    return TransferError(f"{label}: the hub answered HTTP {status}")


def _info(entry: RepoFile) -> RepoFileInfo:
    if entry.lfs is not None:
        return RepoFileInfo(entry.path, entry.lfs.size, sha256_or_none(entry.lfs.sha256))
    return RepoFileInfo(entry.path, entry.size)


def _model_name(siblings: list[str]) -> str:
    if len(siblings) == 1:
        return siblings[0]
    return siblings[0].removesuffix(f"-00001-of-{len(siblings):05d}.gguf") + ".gguf"
