"""Retrying transient failures with exponential backoff.

Only ``TransientError`` is retried: a 404, a refused token or a hash mismatch will
not go away by asking again. An attempt that moved the download forward resets the
count, so a connection that drops every few GiB still finishes a 50 GiB file,
while a server that fails at once every time is given up on after ``attempts``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from models_app.transfer.errors import TransientError

T = TypeVar("T")


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
    on_retry: Callable[[TransientError, int, int], None] | None = None,
) -> T:
    """``attempt(n)`` for n = 0, 1, ... until it returns, raises a permanent error, or
    fails with ``TransientError`` ``policy.attempts`` times in a row without
    ``progressed()`` being true after the failure.

    ``on_retry(error, n, m)`` is called before each wait: attempt ``n`` of at most ``m``
    (in a row) is about to be made, after ``error``."""
    failures = 0
    number = 0
    while True:
        try:
            return attempt(number)
        except TransientError as error:
            failures = 1 if progressed() else failures + 1
            if failures >= policy.attempts:
                raise TransientError(
                    f"{error} (gave up after {failures} attempts in a row)",
                    retry_after=error.retry_after,
                ) from error
            if on_retry is not None:
                on_retry(error, failures + 1, policy.attempts)
            policy.sleep(policy.delay(failures, error.retry_after))
        number += 1
