"""Liveness checks from the web process.

Agents check every node every few seconds, but when the only agent dies (the embedded
default has one) nobody would notice. Each web process therefore runs the same
idempotent checks in a daemon thread, started with the first request it serves."""

from __future__ import annotations

import logging
import threading

from django.db import DatabaseError, close_old_connections

from inventory import actions

logger = logging.getLogger(__name__)
CHECK_EVERY = 5.0


def check_once() -> None:
    actions.do_mark_stale_nodes_offline()
    actions.do_apply_maintenance_windows()


class Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.stop = threading.Event()

    def ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(CHECK_EVERY):
            close_old_connections()
            try:
                check_once()
            except DatabaseError:
                logger.exception("watchdog: liveness check failed; retrying")


watchdog = Watchdog()
