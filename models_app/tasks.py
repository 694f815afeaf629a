"""Django-Q entry points of the node's worker: download a model copy, delete one.

Thin: they claim the row (``models_app.actions``), run the transfer engine
(``models_app.transfer``) and record what happened. Each is safe to run twice: a
second delivery finds the row no longer claimable and returns.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from pathlib import Path

from django.conf import settings
from huggingface_hub import get_token

from models_app import actions
from models_app.choices import DownloadState, SourceKind
from models_app.locks import path_lock
from models_app.models import ModelFile
from models_app.rates import RateMeter
from models_app.retrying import TransientFailure
from models_app.transfer import (
    Cancelled,
    DownloadOptions,
    DownloadResult,
    HfFile,
    TransferError,
    UnsafePath,
    download_shards,
    download_url,
    resolve_inside,
    resolve_inside_any,
)

logger = logging.getLogger("gpufleet.downloads")


def worker_id() -> str:
    """Names the claimer in the row: host, pid, and a nonce per task run."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def download_model_file(copy_id: str) -> str:
    """Download (or resume) one copy on this node; the outcome is in the row."""
    worker = worker_id()
    copy = actions.do_claim(copy_id, worker)
    if copy is None:
        return "not claimable (done, cancelled or taken by another worker)"
    try:
        directory = _local_directory(copy)
        with path_lock(copy.path, stop=lambda: not _still_mine(copy, worker)) as locked:
            if not locked:
                return "taken over by another worker"
            results = _transfer(copy, worker, directory)
    except Cancelled:
        return "stopped: cancelled or taken over"
    except TransferError as exc:
        actions.do_fail(copy, str(exc))
        return f"failed: {exc}"
    except Exception as exc:
        logger.exception("download %s failed", copy_id)
        actions.do_fail(copy, f"Unexpected error: {type(exc).__name__}: {exc}")
        raise
    return _record(copy, worker, results)


def _still_mine(copy: ModelFile, worker: str) -> bool:
    return ModelFile.objects.filter(
        pk=copy.pk, state=DownloadState.DOWNLOADING, task_id=worker
    ).exists()


def _local_directory(copy: ModelFile) -> Path:
    """The copy's directory with symlinks resolved, checked against this node's roots:
    the web process could only check the path's text."""
    roots = [Path(root) for root in settings.GPUFLEET_STORAGE_ROOTS]
    if not any(Path(copy.storage_root).resolve() == root.resolve() for root in roots):
        shown = ", ".join(str(root) for root in roots)
        raise UnsafePath(
            f"{copy.storage_root} is not a storage root of this node any more ({shown})"
        )
    return resolve_inside_any(roots, actions.copy_directory(copy))


def _transfer(copy: ModelFile, worker: str, directory: Path) -> list[DownloadResult]:
    stop = threading.Event()
    meter = RateMeter()

    def progress(done: int, total: int | None) -> None:
        speed, eta = meter.add(done, total)
        if not actions.do_progress(copy, worker, actions.Progress(done, speed, eta)):
            stop.set()  # cancelled by an operator, or another worker took over

    def retrying(error: TransientFailure, attempt: int, attempts: int) -> None:
        note = f"retrying: {error}, attempt {attempt} of {attempts}"
        if not actions.do_retrying(copy, worker, note):
            stop.set()

    options = DownloadOptions(progress=progress, should_stop=stop.is_set, on_retry=retrying)
    model = copy.model
    if model.source_kind == SourceKind.HF:
        source = HfFile(
            model.hf_repo,
            model.hf_filename,
            revision=model.commit or model.revision or "main",
            token=get_token(),
        )
        return download_shards(source, directory, options)
    first = model.files[0]
    dest = resolve_inside(directory, first["name"])
    return [download_url(model.url, dest, sha256=first.get("sha256") or None, options=options)]


def _record(copy: ModelFile, worker: str, results: list[DownloadResult]) -> str:
    if not actions.do_start_verifying(copy, worker):
        return "stopped: cancelled or taken over"
    expected = [entry.get("size") for entry in copy.model.files]
    sizes = [result.size for result in results]
    if len(results) != len(expected) or any(
        size and size != got for size, got in zip(expected, sizes, strict=False)
    ):
        actions.do_fail(copy, f"Downloaded sizes {sizes} differ from the catalog's {expected}.")
        return "failed: size mismatch"
    actions.do_finish(copy, sum(sizes), results[0].sha256)
    resumed = sum(result.resumed_from for result in results)
    return f"ready: {sum(sizes)} bytes ({resumed} resumed from disk)"


def delete_model_file(copy_id: str) -> str:
    """Remove a copy's files (partial ones and their sidecars too), then its row."""
    copy = ModelFile.objects.select_related("model", "node").filter(pk=copy_id).first()
    if copy is None or copy.state != DownloadState.DELETING:
        return "nothing to delete"
    try:
        directory = _local_directory(copy)
        with path_lock(copy.path):
            removed = _remove_files(copy, directory)
    except (TransferError, OSError) as exc:
        actions.do_fail(copy, f"Could not delete the files: {exc}")
        return f"failed: {exc}"
    actions.do_deleted(copy)
    return f"deleted {removed} files"


def _remove_files(copy: ModelFile, directory: Path) -> int:
    names = [entry["name"] for entry in copy.model.files] or [Path(copy.path).name]
    removed = 0
    for name in names:
        final = resolve_inside(directory, name)
        for path in (final, *(final.with_name(final.name + s) for s in SIDECARS)):
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed += 1
        _remove_empty_parents(final.parent, stop_at=directory)
    _remove_empty_parents(directory, stop_at=Path(copy.storage_root).resolve())
    return removed


SIDECARS = (".partial", ".partial.json", ".partial.json.tmp")


def _remove_empty_parents(directory: Path, stop_at: Path) -> None:
    """Remove ``directory`` and its parents while empty, never ``stop_at`` or above."""
    while directory != stop_at and directory.is_relative_to(stop_at):
        try:
            directory.rmdir()
        except OSError:  # not empty, or already gone
            return
        directory = directory.parent
