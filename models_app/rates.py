"""Download speed and ETA from successive progress figures, over a sliding window."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW = 10.0  # seconds: steady enough to read, quick enough to follow a change


class RateMeter:
    """Feed it (bytes done, total) as progress comes; it answers (bytes/s, seconds left)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window: float = WINDOW):
        self.clock, self.window = clock, window
        self.points: deque[tuple[float, int]] = deque()

    def add(self, done: int, total: int | None) -> tuple[float, float | None]:
        now = self.clock()
        self.points.append((now, done))
        while len(self.points) > 2 and now - self.points[1][0] >= self.window:
            self.points.popleft()
        start, first = self.points[0]
        elapsed = now - start
        speed = max(0.0, (done - first) / elapsed) if elapsed > 0 else 0.0
        if total is None or speed <= 0:
            return speed, None
        return speed, max(0.0, (total - done) / speed)
