"""The partial file a download writes to, its sidecar, and the final atomic rename.

Bytes go to ``<final>.partial``; the final name appears only once the whole file
is verified and on disk (fsync, ``os.replace``, fsync of the directory), so a file
under its final name is always complete. ``<final>.partial.json`` remembers what
the partial file is a prefix of: the expected sha256 and size (a partial left over
from another version of the file is discarded, not resumed) and the ETag that the
download server gave (sent back in ``If-Range``, so a file changed on the server
restarts instead of being spliced). The hub's ETag of an LFS file is not the
CDN's, which is why it is recorded from the download response itself.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from io import FileIO
from pathlib import Path

from models_app.transfer.sources import RemoteFile


@dataclass(frozen=True)
class PartialMeta:
    """What a partial file is the beginning of."""

    sha256: str | None = None
    size: int | None = None
    etag: str | None = None

    def conflicts_with(self, remote: RemoteFile) -> bool:
        """True when ``remote`` is known to be another file than the one begun."""
        return bool(
            (self.sha256 and remote.sha256 and self.sha256 != remote.sha256)
            or (self.size is not None and remote.size is not None and self.size != remote.size)
        )


class PartialFile:
    """``<final>.partial`` with its sidecar; see the module docstring."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.with_name(final.name + ".partial")
        self.meta_path = final.with_name(final.name + ".partial.json")

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read_meta(self) -> PartialMeta:
        """The sidecar's contents; empty when it is missing or unreadable."""
        try:
            data = json.loads(self.meta_path.read_text())
            return PartialMeta(**{key: data.get(key) for key in ("sha256", "size", "etag")})
        except (OSError, ValueError, TypeError):
            return PartialMeta()

    def write_meta(self, meta: PartialMeta) -> None:
        temporary = self.meta_path.with_name(self.meta_path.name + ".tmp")
        temporary.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(asdict(meta)))
        temporary.replace(self.meta_path)

    def open_at(self, offset: int) -> FileIO:
        """The partial file opened for writing at ``offset``, cut to that length."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = FileIO(self.path, "a" if offset else "w")
        file.truncate(offset)
        return file

    def truncate(self) -> None:
        """Empty the partial file (the next attempt starts from byte 0)."""
        if self.path.exists():
            os.truncate(self.path, 0)

    def discard(self) -> None:
        """Delete the partial file and its sidecar."""
        for path in (self.path, self.meta_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def commit(self) -> None:
        """Make the verified partial file the final one, durably and atomically."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.path.replace(self.final)
        _fsync_directory(self.final.parent)
        with contextlib.suppress(FileNotFoundError):
            self.meta_path.unlink()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
