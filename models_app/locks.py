"""One writer per file on a node: an exclusive ``flock`` named after the file's path.

The agent requeues a download whose worker looks dead (no progress for 30 s); if the
old worker was only stuck, two of them would write one partial file. The lock makes
the newcomer wait until the old one has noticed (its next progress write fails) and
let go. Lock files live in the state directory, not beside the models.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator

from django.conf import settings

POLL = 0.5


def lock_path(path: str) -> str:
    digest = hashlib.sha256(path.encode()).hexdigest()[:32]
    directory = settings.STATE_DIR / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / f"{digest}.lock")


@contextlib.contextmanager
def path_lock(path: str, stop: Callable[[], bool] = lambda: False) -> Iterator[bool]:
    """Hold the lock of ``path``; yields False (without it) once ``stop()`` says to give up
    waiting. A dead holder's lock is released by the kernel."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop():
                    yield False
                    return
                time.sleep(POLL)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
