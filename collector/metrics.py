"""Counters shared by the collector's threads, guarded by one lock."""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    """Thread-safe counters and last-seen values, read as one consistent snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._values: dict[str, object] = {}

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def set(self, name: str, value: object) -> None:
        with self._lock:
            self._values[name] = value

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {**dict(self._counters), **self._values}
