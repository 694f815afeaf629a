"""Talking to a Hugging Face hub through huggingface_hub: resolve a file, list GGUF models.

huggingface_hub knows the hub's protocol (resolve URLs, which redirects to follow
with the token and which not, where the LFS size and sha256 are) and its errors
(``X-Error-Code``); this module maps both onto the engine's plain data and errors.
The token is passed explicitly (``False`` when there is none), so a token saved on
the machine is never sent by surprise.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin

from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile

from models_app.gguf.split import shard_locations
from models_app.transfer.errors import (
    FileNotFound,
    GatedRepo,
    NotFound,
    RepoNotFound,
    RevisionNotFound,
    TransferError,
    TransientError,
    Unauthorized,
)
from models_app.transfer.http import retry_after, transport_errors
from models_app.transfer.sources import (
    HfFile,
    RemoteFile,
    hub_endpoint,
    same_origin,
    sha256_or_none,
    strong_etag,
    validate_repo,
)


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


def resolve_hf_file(source: HfFile, *, timeout: float = 10.0) -> RemoteFile:
    """Where ``source``'s bytes are (the CDN URL for LFS files), their size and sha256.

    One HEAD on the hub's resolve URL; huggingface_hub follows redirects within the
    hub and stops at the CDN's, whose response carries ``X-Linked-Size``,
    ``X-Linked-Etag`` (the sha256) and ``X-Repo-Commit``.
    """
    url = hf_hub_url(source.repo_id, source.filename, revision=source.revision, endpoint=source.hub)
    with translated_hub_errors(source.label, token=bool(source.token)):
        meta = get_hf_file_metadata(
            url, token=source.token or False, timeout=timeout, endpoint=source.hub
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
) -> list[GgufModel]:
    """The GGUF models of a repo, split shards grouped into one entry each."""
    validate_repo(repo_id, revision)
    api = HfApi(endpoint=hub_endpoint(endpoint))
    label = f"{repo_id} @ {revision}"
    with translated_hub_errors(label, token=bool(token)):
        tree = api.list_repo_tree(repo_id, recursive=True, revision=revision, token=token or False)
        files = [_info(entry) for entry in tree if isinstance(entry, RepoFile)]
    return group_gguf_files(files)


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
def translated_hub_errors(label: str, *, token: bool) -> Iterator[None]:
    """Turn huggingface_hub's and the network's exceptions into the engine's errors."""
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
    except OfflineModeIsEnabled as error:
        raise TransferError(f"{label}: HF_HUB_OFFLINE is set, the hub cannot be reached") from error
    except transport_errors() as error:
        raise TransientError(f"{label}: {error or type(error).__name__}") from error


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
