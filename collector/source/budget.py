"""Pause at the budget: close the stream when the ledger says the budget is spent, reopen it
when the UTC day (posts_per_day) or the billing cycle (usd_per_month) renews it.

X bills every post a connection delivers (Posts: Read, per post returned:
https://docs.x.com/x-api/getting-started/pricing), so the only way to stop the bill is to close
the connection: a pause is a disconnection on purpose, and no connection is opened while
paused. While paused the health is degraded with the ledger's reason ("budget reached: 1,000
posts today (posts_per_day 1,000); paused until 00:00 UTC") and a `budget_paused` event
carries the figures; `on_exhausted = "continue"` only meters, logs and shows the figures: one
warning when the budget is crossed, then at most one a minute with the count of posts over it
(collector.telemetry.lograte), and at once again when the next day or cycle is crossed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from collector.telemetry.health import BUDGET_CONDITION, DEGRADED, Health
from collector.telemetry.ledger import BillingLedger, Exhausted
from collector.telemetry.lograte import RepeatedWarnings

log = logging.getLogger(__name__)

CHECK_SECONDS = 0.5  # how often a pause checks whether the day or cycle has turned


class BudgetGuard:
    """Owns the stream reader thread: starts it, pauses it at the budget, restarts it after.

    stream: the XStream (its pause/resume); start: starts a reader thread for it and returns
    the thread; record: EventLog.record(event, cause); on_pause: told of each pause before the
    stream closes (gap repair: a pause is not a gap, collector.source.repair).
    """

    def __init__(
        self,
        ledger: BillingLedger,
        stream,
        start: Callable[[], threading.Thread],
        health: Health,
        record: Callable[[str, str | None], None] | None = None,
        on_pause: Callable[[Exhausted], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.stream = stream
        self._start = start
        self.health = health
        self.record = record
        self.on_pause = on_pause
        self.reader: threading.Thread | None = None
        self.paused: Exhausted | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.warnings = RepeatedWarnings(log, first_few=1)  # one a post over: rate-limited
        ledger.on_exhausted = self._on_exhausted

    def start(self, stop: threading.Event) -> None:
        """Start the reader, or begin paused when the budget is already spent (a restart)."""
        exhausted = self.ledger.exhausted()
        if exhausted is not None and self.ledger.budget.on_exhausted == "pause":
            self._pause(exhausted)
        else:
            self.reader = self._start()
        threading.Thread(target=self._loop, args=(stop,), name="budget", daemon=True).start()

    def reader_ended(self) -> bool:
        """True when the reader stopped for a reason other than a pause (the app then exits)."""
        with self._lock:
            if self.paused is not None:
                return False
            return self.reader is None or not self.reader.is_alive()

    def _on_exhausted(self, exhausted: Exhausted) -> None:
        # Called on the reader thread, right after the post that reached the budget.
        if self.ledger.budget.on_exhausted == "pause":
            self._pause(exhausted)
        else:
            self.warnings.warning(
                f"over the budget until {exhausted.until.isoformat()}",
                "%s; collecting on (budget.on_exhausted = continue)",
                exhausted.figures,
            )

    def _pause(self, exhausted: Exhausted) -> None:
        with self._lock:
            if self.paused is not None:
                return
            self.paused = exhausted
        if self.on_pause is not None:
            self.on_pause(exhausted)
        self.stream.pause(exhausted.reason, exhausted.until)
        self.health.report(BUDGET_CONDITION, DEGRADED, exhausted.reason)
        log.warning("%s; the stream is closed until then (%s)", exhausted.reason, exhausted.figures)
        if self.record is not None:
            self.record("budget_paused", exhausted.figures)
        self._wake.set()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(CHECK_SECONDS)
            self._wake.clear()
            with self._lock:
                paused = self.paused
            if paused is None or stop.is_set():
                continue
            current = self.ledger.exhausted()
            if current is not None:
                # posts already on their way when the stream closed are billed too
                self.health.report(BUDGET_CONDITION, DEGRADED, current.reason)
                continue
            reader = self.reader
            if reader is not None:
                reader.join(5.0)  # the paused reader has closed its connection
            with self._lock:
                self.paused = None
                self.stream.resume()
                self.reader = self._start()
            self.health.clear(BUDGET_CONDITION)
            log.info("budget renewed (%s ended): reconnecting the stream", paused.until)
