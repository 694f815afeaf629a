"""Downloads from start to verified file: resolve, stream with retries, verify, rename.

The entry points a Django task calls::

    result = download_hf_file(HfFile("org/repo", "m-Q4_K_M.gguf"), dest, options)
    results = download_shards(HfFile("org/repo", "m-00001-of-00003.gguf"), directory)
    result = download_url("https://mirror.example/m.gguf", dest, sha256=...)

Each is resumable: a call after a crash, a cancel or a failure continues from the
partial file on disk. A Hugging Face source is resolved again before every retry
(CDN URLs are signed and expire) at the commit the first resolution found, so
retries and sibling shards cannot see a branch that moved meanwhile.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models_app.gguf.split import shard_locations
from models_app.retrying import RetryPolicy, TransientFailure, with_retries
from models_app.transfer.errors import VerificationFailed
from models_app.transfer.hashing import FileHasher
from models_app.transfer.http import open_client, resolve_url
from models_app.transfer.hub import resolve_hf_file
from models_app.transfer.partial import PartialFile
from models_app.transfer.paths import DEFAULT_SPACE_MARGIN, check_free_space, resolve_inside
from models_app.transfer.sources import HfFile, RemoteFile
from models_app.transfer.stream import Fetcher, Progress, ProgressCallback, StopCheck

Resolver = Callable[[int], RemoteFile]
"""The remote file for attempt n (0 first): resolution may be redone on retries."""


@dataclass(frozen=True)
class DownloadOptions:
    """The caller's hooks and limits (see ``Progress``, ``StopCheck``, ``RetryPolicy``)."""

    progress: ProgressCallback | None = None
    should_stop: StopCheck | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    space_margin: int = DEFAULT_SPACE_MARGIN
    progress_interval: float = 0.5
    on_retry: Callable[[TransientFailure, int, int], None] | None = None
    """Called before each retry with the error, the attempt about to be made, and the
    most attempts in a row (e.g. to show "retrying: <reason>, attempt 2 of 6")."""


@dataclass(frozen=True)
class DownloadResult:
    """A verified file under its final name."""

    path: Path
    size: int
    sha256: str
    commit: str | None
    resumed_from: int
    """Bytes that were already on disk when the call started."""
    verified: bool
    """True when the sha256 was checked against the source's (else only computed)."""


def download_hf_file(
    source: HfFile, dest: Path, options: DownloadOptions | None = None
) -> DownloadResult:
    """Download one file of a Hugging Face repo to ``dest`` (resumable, verified)."""
    opts = options or DownloadOptions()
    first = _resolve(source, opts)
    progress = _progress(opts, first.size)
    result = _download(_hf_resolver(source, first), dest, opts, progress)
    progress.update(result.size, force=True)
    return result


def download_url(
    url: str,
    dest: Path,
    *,
    headers: dict[str, str] | None = None,
    sha256: str | None = None,
    options: DownloadOptions | None = None,
) -> DownloadResult:
    """Download a plain http(s) URL to ``dest``; ``sha256`` is checked when given."""
    opts = options or DownloadOptions()
    remote = with_retries(
        lambda _: resolve_url(url, headers=headers, sha256=sha256),
        opts.retry,
        on_retry=opts.on_retry,
    )
    return download_remote(remote, dest, opts)


def download_remote(
    remote: RemoteFile, dest: Path, options: DownloadOptions | None = None
) -> DownloadResult:
    """Download an already resolved file to ``dest``."""
    opts = options or DownloadOptions()
    progress = _progress(opts, remote.size)
    result = _download(lambda _: remote, dest, opts, progress)
    progress.update(result.size, force=True)
    return result


def download_shards(
    source: HfFile, directory: Path, options: DownloadOptions | None = None
) -> list[DownloadResult]:
    """Download every shard of the model ``source.filename`` belongs to, in order.

    Shards keep their repo paths under ``directory`` (refused if a name leaves it).
    All are resolved first, at one commit, so that the free-space check and the
    progress figures cover the whole model; a non-split file is one "shard".
    """
    opts = options or DownloadOptions()
    names = shard_locations(source.filename)
    first = _resolve(source.with_filename(names[0]), opts)
    pinned = source.pinned(first.commit)
    remotes = [first] + [_resolve(pinned.with_filename(name), opts) for name in names[1:]]
    dests = [resolve_inside(directory, name) for name in names]
    _check_space(remotes, dests, opts.space_margin)
    sizes = [remote.size for remote in remotes]
    progress = _progress(opts, None if None in sizes else sum(s for s in sizes if s is not None))
    results = []
    for name, remote, dest in zip(names, remotes, dests, strict=True):
        resolver = _hf_resolver(pinned.with_filename(name), remote)
        results.append(_download(resolver, dest, opts, progress))
        progress.base += results[-1].size
    progress.update(0, force=True)
    return results


def _download(
    resolve: Resolver, dest: Path, opts: DownloadOptions, progress: Progress
) -> DownloadResult:
    existing = _already_downloaded(dest, resolve(0))
    if existing is not None:
        return existing
    partial = PartialFile(dest)
    resumed_from = partial.size()
    with open_client() as client, FileHasher() as hasher:
        fetcher = Fetcher(
            client,
            partial,
            hasher,
            progress,
            should_stop=opts.should_stop or (lambda: False),
            space_margin=opts.space_margin,
        )
        remote = with_retries(
            lambda n: fetcher.fetch(resolve(n)),
            opts.retry,
            progressed=lambda: fetcher.written > 0,
            on_retry=opts.on_retry,
        )
        return _finish(partial, hasher, remote, resumed_from)


def _finish(
    partial: PartialFile, hasher: FileHasher, remote: RemoteFile, resumed_from: int
) -> DownloadResult:
    """Check size and sha256, then move the file to its final name."""
    size = partial.size()
    if remote.size is not None and size != remote.size:
        partial.discard()
        raise VerificationFailed(
            f"{remote.label}: expected {remote.size} bytes, got {size}; "
            "the partial file was deleted"
        )
    digest = hasher.hexdigest()
    if remote.sha256 is not None and digest != remote.sha256:
        partial.discard()
        raise VerificationFailed(
            f"{remote.label}: sha256 mismatch: expected {remote.sha256}, got {digest}; "
            "the partial file was deleted"
        )
    partial.commit()
    verified = remote.sha256 is not None
    return DownloadResult(partial.final, size, digest, remote.commit, resumed_from, verified)


def _already_downloaded(dest: Path, remote: RemoteFile) -> DownloadResult | None:
    """``dest`` when it already holds exactly ``remote`` (a model whose first shards
    were done before an interruption): checked by size and sha256, read from disk."""
    if remote.size is None or remote.sha256 is None or not dest.is_file():
        return None
    if dest.stat().st_size != remote.size or _sha256_of(dest) != remote.sha256:
        return None
    return DownloadResult(dest, remote.size, remote.sha256, remote.commit, remote.size, True)


def _sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _resolve(source: HfFile, opts: DownloadOptions) -> RemoteFile:
    return with_retries(lambda _: resolve_hf_file(source), opts.retry, on_retry=opts.on_retry)


def _hf_resolver(source: HfFile, first: RemoteFile) -> Resolver:
    """The first resolution for attempt 0, a fresh one (new signed URL) after that."""
    pinned = source.pinned(first.commit)
    return lambda attempt: first if attempt == 0 else resolve_hf_file(pinned)


def _check_space(remotes: list[RemoteFile], dests: list[Path], margin: int) -> None:
    remaining = sum(
        max(0, remote.size - PartialFile(dest).size())
        for remote, dest in zip(remotes, dests, strict=True)
        if remote.size is not None
    )
    if dests:
        check_free_space(dests[0].parent, remaining, margin=margin)


def _progress(opts: DownloadOptions, total: int | None) -> Progress:
    return Progress(opts.progress, total, interval=opts.progress_interval)
