"""Repeated identical warnings, rate-limited: the first few as they come, then a count a minute.

A condition that repeats (X closing every connection, S3 refusing every PUT) must stay
visible without flooding the log: `RepeatedWarnings.warning(key, message)` logs the first
FIRST_FEW occurrences of a key, then one line per INTERVAL saying how many were suppressed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

FIRST_FEW = 3
INTERVAL = 60.0  # seconds


class RepeatedWarnings:
    def __init__(
        self,
        logger: logging.Logger,
        first_few: int = FIRST_FEW,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.first_few = first_few
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, list[float]] = {}  # key -> [count, suppressed, last logged at]

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        now = self.clock()
        with self._lock:
            count, suppressed, last = self._seen.get(key, [0, 0, 0.0])
            count += 1
            if count <= self.first_few:
                self._seen[key] = [count, 0, now]
                emit, note = True, ""
            elif now - last >= self.interval:
                self._seen[key] = [count, 0, now]
                emit, note = (
                    True,
                    f" (repeated {int(suppressed) + 1} times in the last {now - last:.0f} s)",
                )
            else:
                self._seen[key] = [count, suppressed + 1, last]
                emit, note = False, ""
        if emit:
            self.logger.log(level, message + note, *args)

    def warning(self, key: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, message, *args)

    def error(self, key: str, message: str, *args: object) -> None:
        self.log(logging.ERROR, key, message, *args)

    def reset(self, key: str) -> None:
        """Forget a key (its condition ended), so a new occurrence is logged at once."""
        with self._lock:
            self._seen.pop(key, None)

    def reset_all(self) -> None:
        """Forget every key (e.g. S3 took an upload again)."""
        with self._lock:
            self._seen.clear()
