"""Path safety and free space: where a download may write, and whether it fits.

File names come from hub listings and from operators; both are untrusted. A name
like ``../../etc/cron.d/x`` or a symlink planted inside a storage root must not make
a download write elsewhere, so every destination goes through ``resolve_inside``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from models_app.transfer.errors import InsufficientSpace, UnsafePath

DEFAULT_SPACE_MARGIN = 512 * 1024 * 1024
"""Kept free after a download: a full disk also stops the database and the logs."""


def resolve_inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` (relative to ``root``, or absolute) resolved, refused if it leaves ``root``.

    ``..`` components are refused outright rather than normalised, since no honest
    file name needs them; symlinks are followed (``Path.resolve``) and the result
    must still be inside the resolved root. The path need not exist yet.
    """
    base = Path(root).resolve()
    candidate = _checked_path(path)
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not resolved.is_relative_to(base):
        raise UnsafePath(f"{os.fspath(path)!r} is outside the storage root {base}")
    return resolved


def resolve_inside_any(
    roots: Sequence[str | os.PathLike[str]], path: str | os.PathLike[str]
) -> Path:
    """Like ``resolve_inside`` for several roots: an absolute path may be in any of them.

    A relative path is taken relative to the first root.
    """
    if not roots:
        raise UnsafePath("no storage root is configured")
    if not Path(_checked_path(path)).is_absolute():
        return resolve_inside(roots[0], path)
    for root in roots:
        try:
            return resolve_inside(root, path)
        except UnsafePath:
            continue
    shown = ", ".join(os.fspath(root) for root in roots)
    raise UnsafePath(f"{os.fspath(path)!r} is outside the storage roots ({shown})")


def check_free_space(
    directory: str | os.PathLike[str], needed: int, *, margin: int = DEFAULT_SPACE_MARGIN
) -> None:
    """Refuse early when ``directory``'s file system cannot take ``needed`` more bytes.

    Failing before the transfer is kinder than ENOSPC after hours of downloading
    (and than filling the disk that also holds the database).
    """
    if needed <= 0:
        return
    free = shutil.disk_usage(_existing_ancestor(Path(directory))).free
    if needed + margin > free:
        raise InsufficientSpace(
            f"{directory} has {_human(free)} free; the download needs {_human(needed)} "
            f"more, plus {_human(margin)} kept free"
        )


def _checked_path(path: str | os.PathLike[str]) -> Path:
    text = os.fspath(path)
    if "\x00" in text:
        raise UnsafePath(f"{text!r} contains a NUL byte")
    candidate = Path(text)
    if ".." in candidate.parts:
        raise UnsafePath(f"{text!r} contains '..'")
    return candidate


def _existing_ancestor(path: Path) -> Path:
    """The directory itself or, before it is created, its closest existing parent."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _human(size: int) -> str:
    if size >= 1024**3:
        return f"{size / 1024**3:.2f} GiB"
    return f"{size / 1024**2:.1f} MiB"
