"""The collector with a movable clock: `python -m tests.clocked OFFSET_FILE run --config F`.

OFFSET_FILE holds seconds added to the real time (0 when missing); a test writes it to move
the collector's billing day and budget renewals (collector.app.clock) past midnight at once,
and gives the X stand-in the same clock (`OffsetClock(path)`) so both bills agree.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


class OffsetClock:
    """time.time() plus the seconds in a file, re-read at most every 50 ms."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0.0
        self._read_at = -1.0

    def set(self, seconds: float) -> None:
        self.path.write_text(f"{seconds}\n")
        self._read_at = -1.0

    def __call__(self) -> float:
        now = time.monotonic()
        if now - self._read_at > 0.05:
            self._read_at = now
            try:
                self._offset = float(self.path.read_text() or 0)
            except (FileNotFoundError, ValueError):
                self._offset = 0.0
        return time.time() + self._offset


def seconds_to_midnight(clock: OffsetClock) -> float:
    """Seconds from the clock's now to the next 00:00 UTC."""
    now = clock()
    return 86400 - now % 86400


def main() -> int:
    from collector import app, cli

    app.clock = OffsetClock(Path(sys.argv[1]))
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
