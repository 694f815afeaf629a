"""Server-side fetches that fail for a while: the connect timeout, ``Retry-After``, and
retrying with exponential backoff. Plain Python, no Django; the download engine
(``transfer``) and remote header reads (``gguf.remote``) both build on it.

Only a ``TransientFailure`` is retried: a 404, a refused token or a hash mismatch will
not go away by asking again. An attempt that moved the download forward resets the
count, so a connection that drops every few GiB still finishes a 50 GiB file,
while a server that fails at once every time is given up on after ``attempts``.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

CONNECT_TIMEOUT = 3.0
"""Seconds to open a connection (TCP, then TLS) for any server-side fetch: a server that
takes longer is down or unreachable, and someone may be waiting on the request. A
working server, however slow to answer, connects well within this."""


class TransientFailure(Exception):
    """A failure worth retrying: 5xx, 429, a dropped connection, a timeout.

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def gave_up(self, failures: int) -> TransientFailure:
        """The error to raise once ``failures`` attempts in a row failed with this one."""
        message = f"{self} (gave up after {failures} attempts in a row)"
        return TransientFailure(message, retry_after=self.retry_after)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (either form of the header), or None."""
    value = headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` tries in a row without progress; waits double from
    ``base_delay`` up to ``max_delay`` (a server's ``Retry-After`` is honoured up to
    ``max_delay``). Jitter spreads the retries of many nodes hitting one hub."""

    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: bool = True
    sleep: Callable[[float], None] = time.sleep

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failures in a row (1 for the first)."""
        wait = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        if self.jitter:
            wait *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


def with_retries(
    attempt: Callable[[int], T],
    policy: RetryPolicy,
    *,
    progressed: Callable[[], bool] = lambda: False,
    on_retry: Callable[[TransientFailure, int, int], None] | None = None,
) -> T:
    """``attempt(n)`` for n = 0, 1, ... until it returns, raises a permanent error, or
    fails with ``TransientFailure`` ``policy.attempts`` times in a row without
    ``progressed()`` being true after the failure.

    ``on_retry(error, n, m)`` is called before each wait: attempt ``n`` of at most ``m``
    (in a row) is about to be made, after ``error``."""
    failures = 0
    number = 0
    while True:
        try:
            return attempt(number)
        except TransientFailure as error:
            failures = 1 if progressed() else failures + 1
            if failures >= policy.attempts:
                raise error.gave_up(failures) from error
            if on_retry is not None:
                on_retry(error, failures + 1, policy.attempts)
            policy.sleep(policy.delay(failures, error.retry_after))
        number += 1
