"""State changes of model copies (``ModelFile``): request, claim, progress, finish, cancel,
retry, delete. Each writes its row with a conditional UPDATE where a worker may race
with an operator, and emits one ``download.changed`` event after commit."""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core import events
from inventory.models import Node
from models_app.choices import (
    ACTIVE_STATES,
    DELETABLE_STATES,
    HOLDING_STATES,
    DownloadState,
    SourceKind,
)
from models_app.models import CatalogModel, ModelFile

logger = logging.getLogger("gpufleet.downloads")

FREE_SPACE_MARGIN = 1024**3  # kept free on the disk after a download
TASK = "models_app.tasks.download_model_file"
DELETE_TASK = "models_app.tasks.delete_model_file"


class DownloadRefused(Exception):
    """A download that cannot be requested; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 422, field: str = "", existing: Any = None):
        super().__init__(message)
        self.message, self.status, self.field, self.existing = message, status, field, existing


def _changed(copy: ModelFile) -> None:
    events.send("download.changed", file_id=str(copy.pk), node_id=str(copy.node_id))


def storage_roots(node: Node) -> list[str]:
    """The node's storage roots, as its agent reports them (this node: the settings),
    normalised as copies record them (``/srv/models/`` → ``/srv/models``)."""
    roots = list(node.storage_roots or node.disk_free)
    if not roots and node.name == settings.NODE_NAME:
        roots = list(settings.GPUFLEET_STORAGE_ROOTS)
    return list(dict.fromkeys(posixpath.normpath(root) for root in roots))


def root_free(node: Node, root: str) -> int | None:
    """Bytes free in ``root`` as the node's agent last reported, whichever way the
    agent spells the root (it reports them as configured); None when unknown."""
    wanted = posixpath.normpath(root)
    for reported, free in node.disk_free.items():
        if posixpath.normpath(reported) == wanted:
            return int(free)
    return None


def default_directory(model: CatalogModel) -> str:
    """``<owner>__<repo>`` for hub models, else the model's name made safe for a path."""
    name = model.hf_repo.replace("/", "__") if model.hf_repo else model.display_name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def plan_path(model: CatalogModel, node: Node, download_path: str | None) -> tuple[str, str]:
    """(storage root, absolute directory) for the copy; refuses anything outside the roots.

    ``download_path`` is a directory: relative to the node's first storage root, or
    absolute inside one of them. Only lexical checks are possible here (the node may
    be another machine); the worker on the node checks again with symlinks resolved.
    """
    roots = storage_roots(node)
    if not roots:
        raise DownloadRefused(f"Node {node.name} reports no storage roots.", field="target_node")
    wanted = download_path or default_directory(model)
    if "\x00" in wanted:
        raise DownloadRefused(
            "The download path may not contain a NUL character.", field="download_path"
        )
    if ".." in wanted.replace("\\", "/").split("/"):
        raise DownloadRefused("The download path may not contain '..'.", field="download_path")
    directory = posixpath.normpath(posixpath.join(roots[0], wanted))
    for root in roots:
        if directory == root or directory.startswith(root.rstrip("/") + "/"):
            return root, directory
    shown = ", ".join(roots)
    raise DownloadRefused(
        f"The download path must lie inside a storage root of {node.name} ({shown}).",
        field="download_path",
    )


def first_file_path(model: CatalogModel, directory: str) -> str:
    """Where the model's (first) file lands: its name in the repo (sub-folders kept, as
    split models' shards are) under ``directory``."""
    path = posixpath.normpath(posixpath.join(directory, model.files[0]["name"]))
    if not path.startswith(directory.rstrip("/") + "/"):
        raise DownloadRefused(f"{model}'s file name leaves the download directory.")
    return path


def copy_directory(copy: ModelFile) -> str:
    """The directory ``first_file_path`` put the copy's files under."""
    name = copy.model.files[0]["name"] if copy.model.files else posixpath.basename(copy.path)
    directory = copy.path[: -len(name)] if copy.path.endswith("/" + name) else ""
    return directory.rstrip("/") or posixpath.dirname(copy.path)


def _check_free_space(model: CatalogModel, node: Node, root: str) -> None:
    free = root_free(node, root)
    needed = model.size_bytes + FREE_SPACE_MARGIN
    if free is not None and free < needed:
        raise DownloadRefused(
            f"Not enough disk space on {node.name}:{root}: {free / 1024**3:.1f} GiB free, "
            f"the model needs {model.size_bytes / 1024**3:.1f} GiB plus 1 GiB kept free.",
            status=507,
            field="target_node",
        )


def _check_not_held(model: CatalogModel, node: Node, path: str) -> None:
    holder = ModelFile.objects.filter(node=node, state__in=HOLDING_STATES)
    same = holder.filter(model=model).first() or holder.filter(path=path).first()
    if same is not None:
        what = "is already on" if same.state == DownloadState.READY else "is already going to"
        raise DownloadRefused(
            f"{same.model} {what} {node.name} ({same.state}, {same.path}).",
            status=409,
            existing=same,
        )


def do_request_download(
    model: CatalogModel, node: Node, download_path: str | None = None, user: Any = None
) -> ModelFile:
    """Queue a download of ``model`` to ``node``; refuses duplicates, paths outside the
    storage roots, models that are not downloadable and disks that cannot hold it."""
    if model.source_kind == SourceKind.PATH:
        raise DownloadRefused("This model is a path on a node; there is nothing to download.")
    if not model.files:
        raise DownloadRefused(f"{model} lists no files to download.")
    root, directory = plan_path(model, node, download_path)
    first = first_file_path(model, directory)
    _check_not_held(model, node, first)
    _check_free_space(model, node, root)
    try:
        with transaction.atomic():
            copy = ModelFile.objects.create(
                model=model,
                node=node,
                storage_root=root,
                path=first,
                bytes_total=model.size_bytes,
                requested_by=user if user is not None and user.is_authenticated else None,
            )
            _enqueue(copy)
            _changed(copy)
    except IntegrityError:  # a concurrent request won the race
        _check_not_held(model, node, first)
        raise
    return copy


def _enqueue(copy: ModelFile, task: str = TASK) -> None:
    """Hand the copy to the target node's worker, once the row is committed."""
    from django_q.tasks import async_task

    def enqueue() -> None:
        try:
            task_id = async_task(task, str(copy.pk), cluster=copy.node.name, group="downloads")
        except Exception:  # the broker (Redis) restarting: do_resume_stalled sends it again
            logger.warning("could not queue the download %s; it is sent again", copy.pk)
            raise
        ModelFile.objects.filter(pk=copy.pk, task_id="").update(task_id=str(task_id))

    transaction.on_commit(enqueue, robust=True)


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    speed: float
    eta_seconds: float | None


def do_claim(copy_id: str, worker: str) -> ModelFile | None:
    """A worker takes a queued (or stalled downloading) copy; None when it is not to run."""
    claimable = (DownloadState.QUEUED, DownloadState.DOWNLOADING)
    now = timezone.now()
    claimed = ModelFile.objects.filter(pk=copy_id, state__in=claimable).update(
        state=DownloadState.DOWNLOADING, task_id=worker, error="", started_at=now, updated_at=now
    )
    if not claimed:
        return None
    copy = ModelFile.objects.select_related("model", "node").get(pk=copy_id)
    ModelFile.objects.filter(pk=copy_id).update(attempts=copy.attempts + 1)
    _changed(copy)
    return copy


def do_progress(copy: ModelFile, worker: str, progress: Progress) -> bool:
    """Record progress; False when the copy is no longer this worker's (cancelled, taken over)."""
    updated = ModelFile.objects.filter(
        pk=copy.pk, state=DownloadState.DOWNLOADING, task_id=worker
    ).update(
        bytes_done=progress.bytes_done,
        speed=progress.speed,
        eta_seconds=progress.eta_seconds,
        retrying="",
        updated_at=timezone.now(),
    )
    if updated:
        _changed(copy)
    return bool(updated)


def do_retrying(copy: ModelFile, worker: str, note: str) -> bool:
    """Record that connection retries run ("retrying: <reason>, attempt n of m"); the next
    progress clears it. False when the copy is no longer this worker's."""
    updated = ModelFile.objects.filter(
        pk=copy.pk, state=DownloadState.DOWNLOADING, task_id=worker
    ).update(retrying=note[:500], updated_at=timezone.now())
    if updated:
        _changed(copy)
    return bool(updated)


def _move(copy: ModelFile, source: tuple[str, ...], target: str, **fields: Any) -> bool:
    moved = ModelFile.objects.filter(pk=copy.pk, state__in=source).update(
        state=target, updated_at=timezone.now(), **fields
    )
    if moved:
        copy.refresh_from_db()
        _changed(copy)
    return bool(moved)


def do_start_verifying(copy: ModelFile, worker: str) -> bool:
    moved = ModelFile.objects.filter(
        pk=copy.pk, state=DownloadState.DOWNLOADING, task_id=worker
    ).update(state=DownloadState.VERIFYING, speed=0, eta_seconds=None, updated_at=timezone.now())
    if moved:
        _changed(copy)
    return bool(moved)


def do_finish(copy: ModelFile, size: int, sha256: str) -> bool:
    now = timezone.now()
    return _move(
        copy, (DownloadState.VERIFYING,), DownloadState.READY,
        bytes_done=size, bytes_total=size, sha256=sha256, finished_at=now, error="",
    )  # fmt: skip


def do_fail(copy: ModelFile, error: str) -> bool:
    failing = (*ACTIVE_STATES, DownloadState.DELETING)
    return _move(
        copy,
        failing,
        DownloadState.FAILED,
        error=error[:4000],
        speed=0,
        eta_seconds=None,
        retrying="",
    )


def do_cancel(copy: ModelFile) -> bool:
    """Stop a queued or running download; its bytes stay on disk for a retry."""
    return _move(
        copy, ACTIVE_STATES, DownloadState.CANCELLED, speed=0, eta_seconds=None, retrying=""
    )


def do_retry(copy: ModelFile) -> ModelFile:
    """Queue a failed or cancelled download again; it resumes from the bytes on disk."""
    _check_not_held(copy.model, copy.node, copy.path)
    with transaction.atomic():
        retryable = (DownloadState.FAILED, DownloadState.CANCELLED)
        if not _move(copy, retryable, DownloadState.QUEUED, task_id=""):
            raise DownloadRefused(
                f"Only failed or cancelled downloads can be retried ({copy.state}).", 409
            )
        ModelFile.objects.filter(pk=copy.pk).update(error="")
        _enqueue(copy)
    copy.refresh_from_db()
    return copy


def do_request_delete(copy: ModelFile) -> ModelFile:
    """Delete a copy from its node's disk: the node's worker removes the files (partial
    ones included), then the row. An active download is cancelled first."""
    if copy.is_active:
        do_cancel(copy)
    with transaction.atomic():
        if not _move(copy, DELETABLE_STATES, DownloadState.DELETING, speed=0, eta_seconds=None):
            raise DownloadRefused(f"This copy cannot be deleted now ({copy.state}).", 409)
        _enqueue(copy, DELETE_TASK)
    return copy


def do_deleted(copy: ModelFile) -> None:
    """The worker removed the files: forget the copy."""
    deleted, _ = ModelFile.objects.filter(pk=copy.pk, state=DownloadState.DELETING).delete()
    if deleted:
        _changed(copy)


def do_touch(copy: ModelFile) -> None:
    """Record that a backend loaded this copy (the storage page's "last used")."""
    ModelFile.objects.filter(pk=copy.pk).update(last_used_at=timezone.now())


def stalled_downloads(node: Node, after: timedelta, now: datetime | None = None) -> list[ModelFile]:
    """Downloads of ``node`` that say ``downloading`` but made no progress for ``after``:
    their worker died (killed, node restarted). Django-Q would only redeliver the task
    after its ``retry`` time (hours), so the agent requeues them. Also queued ones whose
    task could not be sent (the broker was restarting: no task id)."""
    cutoff = (now or timezone.now()) - after
    unsent = Q(state=DownloadState.QUEUED, task_id="")
    return list(
        ModelFile.objects.filter(Q(state=DownloadState.DOWNLOADING) | unsent)
        .filter(node=node, updated_at__lt=cutoff)
        .select_related("node")
    )


def do_resume_stalled(node: Node, after: timedelta = timedelta(seconds=30)) -> list[ModelFile]:
    resumed = []
    for copy in stalled_downloads(node, after):
        touched = ModelFile.objects.filter(
            pk=copy.pk, state=copy.state, updated_at=copy.updated_at
        ).update(updated_at=timezone.now())
        if touched:
            with transaction.atomic():
                _enqueue(copy)
            resumed.append(copy)
    return resumed
