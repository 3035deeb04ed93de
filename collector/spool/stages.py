"""A generic runner for the spool's file stages (sealed/ -> ready/ -> a sink).

A stage takes file names from its own folder, oldest first, and hands each to a handler on
one or more worker threads. The handler returns the name the next stage takes (or None), or
raises:

    Held        this file cannot proceed now, the others can: it alone waits (backoff per file)
    anything    the stage cannot work now (disk full, S3 down): the worker waits with the
                stage's shared backoff and the file is taken again

Nothing is ever given up: retries are forever, exponential backoff with full jitter
(delay = uniform(0, min(cap, base * 2**attempt)), AWS Architecture Blog "Exponential Backoff
And Jitter"), capped. Each stage rescans its folder every RESCAN_SECONDS, so a file never
depends on a submit that was lost. drain() hurries every retry and waits until the folders
are empty or only held files remain, or until a deadline.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from collector.errors import Held
from collector.spool.layout import parse_name

log = logging.getLogger(__name__)

RETRY_BASE = 0.5  # seconds; attempt n waits uniform(0, min(RETRY_CAP, RETRY_BASE * 2**n))
RETRY_CAP = 60.0
DRAIN_RETRY_CAP = 1.0  # while draining, retry often until the deadline
RESCAN_SECONDS = 30.0  # every stage rescans its folder so nothing is ever forgotten


def full_jitter(attempt: int, base: float, cap: float) -> float:
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


def spool_order(name: str) -> tuple[int, str]:
    """Oldest first: spool sequence numbers never go back, so leftovers precede new files."""
    try:
        return parse_name(name)[2], name
    except ValueError:
        return 1 << 62, name


def data_files(folder: Path) -> list[str]:
    """Names of spool data files in `folder`, oldest first (dot files are temporaries)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted((n for n in names if not n.startswith(".")), key=spool_order)


class WorkQueue:
    """File names to process, lowest sequence first; each may be held back until a time.

    A name is queued or in progress at most once, so rescans and repeated submits are harmless.
    The queue holds a handful of names at a time, so a linear scan is all it needs.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._not_before: dict[str, float] = {}
        self._busy: set[str] = set()

    def put(self, name: str, not_before: float = 0.0) -> None:
        with self._cond:
            if name in self._not_before or name in self._busy:
                return
            self._not_before[name] = not_before
            self._cond.notify()

    def take(self, stop: threading.Event, timeout: float) -> str | None:
        """The oldest eligible name, marked busy; None after `timeout` or on stop."""
        give_up = time.monotonic() + timeout
        with self._cond:
            while not stop.is_set():
                now = time.monotonic()
                eligible = [n for n, when in self._not_before.items() if when <= now]
                if eligible:
                    name = min(eligible, key=spool_order)
                    del self._not_before[name]
                    self._busy.add(name)
                    return name
                if now >= give_up:
                    return None
                wake = min([give_up, *self._not_before.values()])
                self._cond.wait(max(0.01, min(wake - now, 1.0)))
        return None

    def done(self, name: str) -> None:
        with self._cond:
            self._busy.discard(name)

    def retry(self, name: str, not_before: float = 0.0) -> None:
        with self._cond:
            self._busy.discard(name)
        self.put(name, not_before)

    def hurry(self, within: float) -> None:
        """Bring every held-back name forward to at most `within` seconds from now."""
        with self._cond:
            latest = time.monotonic() + within
            for name, when in self._not_before.items():
                self._not_before[name] = min(when, latest)
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class Backoff:
    """Consecutive-failure counter shared by the workers of one stage."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap = base, cap
        self._failures = 0
        self._lock = threading.Lock()

    def failed(self, cap: float | None = None) -> float:
        with self._lock:
            attempt = self._failures
            self._failures += 1
        return full_jitter(attempt, self.base, self.cap if cap is None else min(cap, self.cap))

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0


@dataclass
class Stage:
    """One step of the path: files in `folder` go through `handle` on `workers` threads.

    handle(name) -> the next stage's file name, or None.
    failed(name, exc, delay, held): reports a failure (log, metrics); `delay` is the wait in
    seconds before the file is tried again. `expected` are the exceptions that are conditions
    (disk full, S3 down), not bugs: any other exception is also retried, with a traceback.
    """

    name: str
    folder: Path
    handle: Callable[[str], str | None]
    failed: Callable[[str, BaseException, float, bool], None]
    workers: int = 1
    expected: tuple[type[BaseException], ...] = (OSError,)
    queue: WorkQueue = field(default_factory=WorkQueue)
    held: dict[str, int] = field(default_factory=dict)  # name -> consecutive Held answers


class StageRunner:
    """Runs stages in a chain on daemon threads named `{prefix}-{stage}[-{n}]`."""

    def __init__(
        self,
        stages: list[Stage],
        *,
        prefix: str,
        retry_base: float = RETRY_BASE,
        retry_cap: float = RETRY_CAP,
    ) -> None:
        self.stages = stages
        self.prefix = prefix
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self._backoff = {stage.name: Backoff(retry_base, retry_cap) for stage in stages}
        self._held_lock = threading.Lock()
        self._stop = threading.Event()
        self._draining = False
        self.threads: list[threading.Thread] = []

    # -- control ----------------------------------------------------------------------------

    def start(self) -> int:
        """Queue what the folders hold and start the workers; return the number of files found."""
        found = self.rescan()
        if self.threads:
            return found
        for index, stage in enumerate(self.stages):
            for number in range(1, stage.workers + 1):
                name = f"{self.prefix}-{stage.name}"
                if stage.workers > 1:
                    name += f"-{number}"
                target = self._worker(index, rescans=number == 1)
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self.threads.append(thread)
        return found

    def submit(self, name: str, stage: int = 0) -> None:
        """Queue a file for a stage; never blocks."""
        self.stages[stage].queue.put(name)

    def rescan(self) -> int:
        found = 0
        for stage in self.stages:
            names = data_files(stage.folder)
            for name in names:
                stage.queue.put(name)
            found += len(names)
        return found

    def pending_names(self) -> list[str]:
        return [name for stage in self.stages for name in data_files(stage.folder)]

    def drain(self, deadline_monotonic: float) -> int:
        """Work at full pace until every folder is empty (held files aside) or the deadline.

        Returns the number of files left in the folders.
        """
        self._draining = True
        if not self.threads:
            self.start()
        self.rescan()
        for stage in self.stages:
            stage.queue.hurry(DRAIN_RETRY_CAP)
        while time.monotonic() < deadline_monotonic:
            with self._held_lock:
                held = {name for stage in self.stages for name in stage.held}
            # a held file waits for an operator, not for the deadline
            if not set(self.pending_names()) - held:
                break
            time.sleep(0.05)
        return len(self.pending_names())

    def stop(self, budget: float = 2.0) -> None:
        """Stop the workers, waiting at most `budget` seconds for all of them together.

        A handler stuck in a socket read must not hold the exit: its file stays in its folder.
        """
        self._stop.set()
        for stage in self.stages:
            stage.queue.wake()
        give_up = time.monotonic() + budget
        for thread in self.threads:
            thread.join(timeout=max(0.0, give_up - time.monotonic()))

    # -- the workers ------------------------------------------------------------------------

    def _worker(self, index: int, rescans: bool) -> Callable[[], None]:
        stage = self.stages[index]

        def loop() -> None:
            next_rescan = time.monotonic() + RESCAN_SECONDS
            while not self._stop.is_set():
                if rescans and time.monotonic() >= next_rescan:
                    for found in data_files(stage.folder):
                        stage.queue.put(found)
                    next_rescan = time.monotonic() + RESCAN_SECONDS
                name = stage.queue.take(self._stop, timeout=1.0)
                if name is not None:
                    self._process(index, name)

        return loop

    def _process(self, index: int, name: str) -> None:
        stage = self.stages[index]
        if not (stage.folder / name).exists():
            stage.queue.done(name)
            return
        try:
            following = stage.handle(name)
        except Held as exc:
            with self._held_lock:
                attempt = stage.held.get(name, 0)
                stage.held[name] = attempt + 1
            delay = full_jitter(attempt, self.retry_base, self._drain_cap() or self.retry_cap)
            stage.failed(name, exc, delay, True)
            stage.queue.retry(name, time.monotonic() + delay)
            return
        except Exception as exc:
            if not isinstance(exc, stage.expected):  # a bug: keep the file and the thread, say so
                log.exception("unexpected error in stage %s on %s", stage.name, name)
            delay = self._backoff[stage.name].failed(self._drain_cap())
            stage.failed(name, exc, delay, False)
            # Held back for `delay` too, or another worker of the stage would retry it at once
            # and the "retry in N s" the log promised would not hold.
            stage.queue.retry(name, time.monotonic() + delay)
            self._sleep(delay)
            return
        self._backoff[stage.name].succeeded()
        with self._held_lock:
            stage.held.pop(name, None)
        stage.queue.done(name)
        if following is not None and index + 1 < len(self.stages):
            self.stages[index + 1].queue.put(following)

    def _drain_cap(self) -> float | None:
        return DRAIN_RETRY_CAP if self._draining else None

    def _sleep(self, seconds: float) -> None:
        """Wait, but return early on stop, and after DRAIN_RETRY_CAP once draining."""
        began = time.monotonic()
        end = began + seconds
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= end or (self._draining and now - began >= DRAIN_RETRY_CAP):
                return
            self._stop.wait(min(0.1, end - now))
