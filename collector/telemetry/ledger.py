"""The billing ledger: the posts X bills, counted as X counts them, kept across restarts.

X bills pay-per-use reads per post returned ("Posts: Read", $0.005 at the list price) and
deduplicates within a UTC day: a post delivered twice in one UTC day is billed once, the next
UTC day it is billed again ("a soft guarantee": https://docs.x.com/x-api/fundamentals/post-cap,
https://docs.x.com/x-api/getting-started/pricing). The ledger keeps the unique post ids of the
current UTC day and the number billed on each earlier day of the billing cycle.

Memory: the day's ids are a sorted numpy uint64 array (8 bytes an id) plus a small set of the
newest ids (at most MERGE_AT), merged into the array when full; a million ids cost about 8 MB
(16 MB for an instant while merging), not the ~100 MB of a Python set of strings. `make bench`
prints the figure.

On disk: `{spool}/ledger/YYYY-MM-DD.u64`, the day's new ids as little-endian uint64, appended
as they are counted (a restart or a reboot reads the day back; a torn tail is cut) and fsynced
at most every SYNC_SECONDS. Days before the previous billing cycle are deleted.

One writer a file: a process that counts posts while another holds the spool (`collector
repair` beside a running collector) appends to a file of its own, `YYYY-MM-DD.<writer>.u64`
(e.g. `2026-12-03.repair-4242.u64`). Every ledger reads all the files of a day: the day's
count is their union (a post is billed once a UTC day, whichever process fetched it), and a
running ledger takes in what the others append at most every ABSORB_SECONDS, so the budget,
the status figures and `collector usage` count what X bills.

Public API (thread-safe): `add(ids) -> billable_new`, `add_lines(data_lines) -> billable_new`,
`billable_today()`, `remaining_today()`, `exhausted()`, `figures()`. The clock (seconds since
the epoch, like time.time) is injectable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from collector.config import BudgetConfig
from collector.source.pricing import MONTHLY_CAP

log = logging.getLogger(__name__)

MERGE_AT = 65536  # newest ids kept in a set before they join the sorted array
SYNC_SECONDS = 1.0
ABSORB_SECONDS = 1.0  # how often a ledger reads what other writers appended to today's files
RATE_WINDOW = 3600  # s: the spend rate is measured over the last hour
FORECAST_AFTER = 600  # s of measured rate before a forecast is shown (a first minute swings)
UINT64_MAX = 2**64 - 1  # the ledger stores ids as uint64: X's ids are 64-bit snowflakes
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.([a-z0-9-]+))?\.u64$")
_WRITER = re.compile(r"^[a-z0-9-]+$")
_ID_KEY = b'"id":"'
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
DATA_DEPTH = 2  # `{"data":{` : a key of the post object itself is two levels deep


def post_id_of(line: bytes) -> int | str | None:
    """The id of the post in a stream data line (`{"data":{..., "id":"123", ...}}`), or None.
    X's ids are decimal strings: an id of other characters comes back as text, and the ledger
    counts it as uncountable (BillingLedger.add).

    Cheap: only the bytes before the post's own `"id"` are looked at. A nested object (a
    referenced post, a context annotation) may carry an "id" key earlier in the line; the
    post's own is the first one at depth 2 once the strings are removed (a string may hold
    braces, never an unescaped quote).
    """
    start = 0
    while (found := line.find(_ID_KEY, start)) >= 0:
        prefix = line[:found]
        # outside the strings: every other part between quotes, unless a quote is escaped
        prefix = _STRING.sub(b"", prefix) if b"\\" in prefix else b"".join(prefix.split(b'"')[::2])
        depth = prefix.count(b"{") + prefix.count(b"[") - prefix.count(b"}") - prefix.count(b"]")
        if depth == DATA_DEPTH:
            end = line.find(b'"', found + len(_ID_KEY))
            value = line[found + len(_ID_KEY) : end]
            return int(value) if value.isdigit() else value.decode("utf-8", "replace")
        start = found + len(_ID_KEY)
    return None


def countable_ids(ids: Iterable[int | str]) -> tuple[list[int], int]:
    """(the ids as ints that fit a uint64, how many did not): an id that is not a decimal
    number from 0 to 2**64 - 1 cannot be kept in the ledger's uint64 files."""
    ids = list(ids)
    try:
        values = [int(i) for i in ids]
        if not values or (min(values) >= 0 and max(values) <= UINT64_MAX):
            return values, 0
    except (TypeError, ValueError):
        pass
    fitting = []
    for raw in ids:
        with contextlib.suppress(TypeError, ValueError):
            if 0 <= (value := int(raw)) <= UINT64_MAX:
                fitting.append(value)
    return fitting, len(ids) - len(fitting)


def day_of(epoch: float) -> date:
    return datetime.fromtimestamp(epoch, UTC).date()


def cycle_start(day: date, cycle_day: int) -> date:
    """The first day of the billing cycle holding `day`: the latest `cycle_day` of a month on
    or before it (a cycle day past the end of a month is that month's last day)."""

    def in_month(year: int, month: int) -> date:
        following = date(year + month // 12, month % 12 + 1, 1)
        return date(year, month, min(cycle_day, (following - timedelta(days=1)).day))

    start = in_month(day.year, day.month)
    if start > day:
        year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
        start = in_month(year, month)
    return start


def next_cycle_start(day: date, cycle_day: int) -> date:
    start = cycle_start(day, cycle_day)
    probe = start + timedelta(days=32)
    return cycle_start(probe.replace(day=min(probe.day, 28)), cycle_day)


def day_files(folder: Path) -> dict[date, list[Path]]:
    """The ledger files in `folder` per UTC day (the collector's and other writers')."""
    days: dict[date, list[Path]] = {}
    if Path(folder).is_dir():
        for path in sorted(Path(folder).iterdir()):
            match = _DAY_FILE.match(path.name)
            if match:
                days.setdefault(date.fromisoformat(match.group(1)), []).append(path)
    return days


def read_ids(path: Path, offset: int = 0) -> np.ndarray:
    """The whole ids in `path` from byte `offset` on (a multiple of 8): a tail another process
    is writing is left for the next read; a missing file has none."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(offset)
            data = handle.read(max(0, (size - offset) // 8 * 8))
    except FileNotFoundError:
        return np.empty(0, dtype=np.uint64)
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def count_day(paths: Sequence[Path]) -> int:
    """Distinct posts in one day's files: each file holds distinct ids, so one file's count
    is its size; several are merged (a post two writers counted is billed once)."""
    if len(paths) == 1:
        with contextlib.suppress(FileNotFoundError):
            return paths[0].stat().st_size // 8
        return 0
    if not paths:
        return 0
    return int(np.unique(np.concatenate([read_ids(path) for path in paths])).size)


def billed_days(folder: Path) -> dict[date, int]:
    """Posts the ledger in `folder` counted per UTC day (every writer's files, each post once),
    read without opening them for writing (a running collector may hold today's)."""
    return {day: count_day(paths) for day, paths in sorted(day_files(Path(folder)).items())}


@dataclass(frozen=True)
class Exhausted:
    """The budget is spent: why (one line) and when it renews (UTC)."""

    reason: str
    until: datetime
    figures: str  # the numbers, for the budget_paused event

    def __str__(self) -> str:
        return self.reason


def _usd(value: float) -> str:
    return f"${value:,.2f}"


class BillingLedger:
    """Unique post ids per UTC day, persisted in `folder`; see the module docstring."""

    def __init__(
        self,
        folder: Path,
        budget: BudgetConfig | None = None,
        clock: Callable[[], float] = time.time,
        writer: str | None = None,
    ) -> None:
        """writer: None for the collector holding the spool (`YYYY-MM-DD.u64`), else a name
        (lower-case letters, digits, dashes) for a file of its own (`YYYY-MM-DD.<writer>.u64`);
        ValueError for another name."""
        if writer is not None and not _WRITER.match(writer):
            raise ValueError(f"ledger writer {writer!r}: expected lower-case letters, digits, -")
        self.writer = writer
        self.folder = Path(folder)
        self.budget = budget or BudgetConfig()
        self.clock = clock
        self.on_exhausted: Callable[[Exhausted], None] | None = None
        self._lock = threading.Lock()
        self._day: date | None = None
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._fd: int | None = None
        self._synced_at = 0.0
        self._dirty = False
        self._earlier: dict[date, int] = {}  # billed posts of earlier days still on disk
        self._minutes: deque[list[int]] = deque()  # [epoch minute, posts billed in it]
        self._started_at = clock()
        self._reported: Exhausted | None = None
        self._uncountable = 0  # ids seen since the start that no uint64 holds
        self._absorbed: dict[str, int] = {}  # other writers' files of today: bytes read
        self._absorbed_at = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._roll(self.clock())

    # Counting ------------------------------------------------------------------------------

    def add_lines(self, lines: Sequence[bytes]) -> int:
        """Count the posts of stream data lines; returns how many X bills anew."""
        return self.add([i for i in map(post_id_of, lines) if i is not None])

    def add(self, ids: Iterable[int | str]) -> int:
        """Count post ids delivered now (stream, search, lookup); returns how many X bills
        anew today (ids not yet seen this UTC day). An id that is not a decimal uint64 is not
        counted: `figures()["uncountable_post_ids"]` says how many there were."""
        values, uncountable = countable_ids(ids)
        now = self.clock()
        with self._lock:
            absorbed = self._roll(now)
            self._uncountable += uncountable
            if not values and not absorbed:
                return 0
            candidates = values
            if self._sorted.size:
                batch = np.array(values, dtype=np.uint64)
                where = np.searchsorted(self._sorted, batch)
                where[where == self._sorted.size] = 0
                candidates = batch[self._sorted[where] != batch].tolist()
            recent, new = self._recent, []
            for value in candidates:
                if value not in recent:
                    recent.add(value)
                    new.append(value)
            if new:
                self._persist(new, now)
                self._count_rate(len(new), now)
            if len(recent) >= MERGE_AT:
                self._merge()
            exhausted = self._exhausted(now) if new or absorbed else None
            fire = exhausted is not None and exhausted != self._reported
            if fire:
                self._reported = exhausted
        if fire and exhausted is not None and self.on_exhausted is not None:
            self.on_exhausted(exhausted)
        return len(new)

    def sync(self) -> None:
        """fsync today's file when it changed (called every tick; at most every SYNC_SECONDS)."""
        with self._lock:
            now = time.monotonic()
            if self._fd is None or not self._dirty or now - self._synced_at < SYNC_SECONDS:
                return
            self._synced_at, self._dirty = now, False
            fd = self._fd
        try:
            os.fsync(fd)
        except OSError as exc:
            log.warning("cannot fsync the billing ledger: %s", exc)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

    # Reading -------------------------------------------------------------------------------

    def billable_today(self) -> int:
        with self._lock:
            self._roll(self.clock())
            return self._today_count()

    def billed_on(self, day: date) -> int:
        with self._lock:
            self._roll(self.clock())
            return self._today_count() if day == self._day else self._earlier.get(day, 0)

    def billed_in_cycle(self) -> int:
        with self._lock:
            self._roll(self.clock())
            return self._cycle_posts()

    def remaining_today(self) -> int | None:
        """Posts that may still be billed today under the budget (None: no limit)."""
        with self._lock:
            self._roll(self.clock())
            return self._remaining()

    def exhausted(self) -> Exhausted | None:
        """Why and until when the budget is spent, or None while it holds."""
        with self._lock:
            now = self.clock()
            self._roll(now)
            return self._exhausted(now)

    def figures(self) -> dict:
        """status.json's spend figures (USD at budget.usd_per_post)."""
        with self._lock:
            now = self.clock()
            self._roll(now)
            price = self.budget.usd_per_post
            today, cycle = self._today_count(), self._cycle_posts()
            return {
                "billable_posts_today": today,
                "billable_posts_cycle": cycle,
                "spend_usd_today": round(today * price, 4),
                "spend_usd_cycle": round(cycle * price, 4),
                "spend_usd_last_hour": round(self._last_hour(now) * price, 4),
                **self._forecast_figures(now),
                "billing_cycle_start": cycle_start(
                    self._today, self.budget.billing_cycle_day
                ).isoformat(),
                "monthly_cap_used_percent": round(100.0 * cycle / MONTHLY_CAP, 2),
                "uncountable_post_ids": self._uncountable,
                "budget": self._budget_figures(),
            }

    # Under the lock ------------------------------------------------------------------------

    def _today_count(self) -> int:
        return int(self._sorted.size) + len(self._recent)

    def _cycle_posts(self) -> int:
        start = cycle_start(self._today, self.budget.billing_cycle_day)
        earlier = sum(n for day, n in self._earlier.items() if start <= day < self._today)
        return earlier + self._today_count()

    def _remaining(self) -> int | None:
        budget, left = self.budget, []
        if budget.posts_per_day is not None:
            left.append(budget.posts_per_day - self._today_count())
        if budget.usd_per_month is not None:
            spent = self._cycle_posts() * budget.usd_per_post
            left.append(int((budget.usd_per_month - spent) / budget.usd_per_post + 1e-9))
        return max(0, min(left)) if left else None

    def _exhausted(self, now: float) -> Exhausted | None:
        budget = self.budget
        today = self._today_count()
        if budget.posts_per_day is not None and today >= budget.posts_per_day:
            figures = f"{today:,} posts today (posts_per_day {budget.posts_per_day:,})"
            return Exhausted(
                f"budget reached: {figures}; paused until 00:00 UTC",
                datetime.combine(self._today + timedelta(days=1), datetime.min.time(), UTC),
                f"{figures}, {_usd(today * budget.usd_per_post)} at ${budget.usd_per_post} a post",
            )
        if budget.usd_per_month is not None:
            posts = self._cycle_posts()
            spent = posts * budget.usd_per_post
            if spent >= budget.usd_per_month - 1e-9:
                renew = next_cycle_start(self._today, budget.billing_cycle_day)
                figures = (
                    f"{_usd(spent)} this billing cycle, {posts:,} posts "
                    f"(usd_per_month {_usd(budget.usd_per_month)})"
                )
                return Exhausted(
                    f"budget reached: {figures}; paused until {renew.isoformat()} 00:00 UTC",
                    datetime.combine(renew, datetime.min.time(), UTC),
                    f"{figures} at ${budget.usd_per_post} a post",
                )
        return None

    def _budget_figures(self) -> dict:
        budget = self.budget
        return {
            "posts_per_day": budget.posts_per_day,
            "usd_per_month": budget.usd_per_month,
            "usd_per_post": budget.usd_per_post,
            "billing_cycle_day": budget.billing_cycle_day,
            "on_exhausted": budget.on_exhausted,
            "remaining_posts_today": self._remaining(),
        }

    def _count_rate(self, posts: int, now: float) -> None:
        minute = int(now // 60)
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1][1] += posts
        else:
            self._minutes.append([minute, posts])
        while self._minutes and self._minutes[0][0] <= minute - RATE_WINDOW // 60:
            self._minutes.popleft()

    def _last_hour(self, now: float) -> int:
        first = int(now // 60) - RATE_WINDOW // 60
        return sum(n for minute, n in self._minutes if minute > first)

    def _rate(self, now: float) -> tuple[float, float]:
        """(posts per second over the last hour or since the start, seconds measured)."""
        minute = int(now // 60)
        since = max(self._started_at, (minute - RATE_WINDOW // 60 + 1) * 60.0)
        measured = max(0.0, now - since)
        return (self._last_hour(now) / measured if measured > 0 else 0.0), measured

    def _forecast_figures(self, now: float) -> dict:
        """spend_usd_cycle_forecast (None until FORECAST_AFTER seconds are measured, with
        spend_forecast_note saying when), monthly_cap_reached_on (the UTC day the forecast
        reaches X's MONTHLY_CAP, where X stops delivering: the forecast stops there too)."""
        rate, measured = self._rate(now)
        if measured < FORECAST_AFTER:
            ready = datetime.fromtimestamp(self._started_at + FORECAST_AFTER, UTC)
            return {
                "spend_usd_cycle_forecast": None,
                "spend_forecast_note": (
                    f"no forecast yet: the rate is measured for {FORECAST_AFTER // 60} minutes "
                    f"first (until {ready:%H:%M} UTC)"
                ),
                "monthly_cap_reached_on": None,
            }
        posts, cap_at = self._forecast_posts(now, rate)
        return {
            "spend_usd_cycle_forecast": round(posts * self.budget.usd_per_post, 2),
            "spend_forecast_note": None,
            "monthly_cap_reached_on": None if cap_at is None else day_of(cap_at).isoformat(),
        }

    def _forecast_posts(self, now: float, rate: float) -> tuple[float, float | None]:
        """(the cycle's posts at its end, when X's monthly cap is reached or None): so far,
        plus `rate` (posts/s) until the end, bounded by what the budget lets through when it
        pauses and by MONTHLY_CAP (X delivers no more in the cycle: the pricing page)."""
        budget = self.budget
        end = datetime.combine(
            next_cycle_start(self._today, budget.billing_cycle_day), datetime.min.time(), UTC
        ).timestamp()
        midnight = datetime.combine(
            self._today + timedelta(days=1), datetime.min.time(), UTC
        ).timestamp()
        pausing = budget.on_exhausted == "pause"
        today_more = rate * max(0.0, midnight - now)
        later = rate * max(0.0, end - midnight)
        if pausing and budget.posts_per_day is not None:
            today_more = min(today_more, max(0, budget.posts_per_day - self._today_count()))
            later = min(later, budget.posts_per_day * max(0.0, end - midnight) / 86400)
        so_far = self._cycle_posts()
        total = so_far + today_more + later
        if pausing and budget.usd_per_month is not None:
            total = min(total, max(so_far, budget.usd_per_month / budget.usd_per_post))
        if total <= MONTHLY_CAP:
            return total, None
        left = max(0.0, MONTHLY_CAP - so_far)
        if left <= today_more:
            reached = now + (left / today_more) * max(0.0, midnight - now) if today_more else now
        else:
            reached = midnight + (left - today_more) / later * max(0.0, end - midnight)
        return float(max(so_far, MONTHLY_CAP)), reached

    def _merge(self) -> None:
        recent = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        recent.sort()
        # timsort merges the two sorted runs in linear time
        self._sorted = np.sort(np.concatenate((self._sorted, recent)), kind="stable")
        self._recent = set()

    def _persist(self, new: list[int], now: float) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, np.array(new, dtype="<u8").tobytes())
            self._dirty = True
        except OSError as exc:
            # The count in memory stays right; only a restart today would under-count.
            log.warning("cannot write the billing ledger %s: %s", self._path(self._today), exc)

    @property
    def _today(self) -> date:
        """The UTC day being counted (_roll sets it from the constructor on)."""
        assert self._day is not None
        return self._day

    def _path(self, day: date) -> Path:
        own = "" if self.writer is None else f".{self.writer}"
        return self.folder / f"{day.isoformat()}{own}.u64"

    def _absorb(self, force: bool = False) -> int:
        """Take in the ids other writers appended to today's files since the last look (at
        most every ABSORB_SECONDS unless forced); returns how many were new today. They are
        on disk already: not written again, and not part of the rate (a repair is no rate)."""
        now = time.monotonic()
        if not force and now - self._absorbed_at < ABSORB_SECONDS:
            return 0
        self._absorbed_at = now
        own, new = self._path(self._today).name, 0
        for path in day_files(self.folder).get(self._today, []):
            if path.name == own:
                continue
            offset = self._absorbed.get(path.name, 0)
            ids = read_ids(path, offset)
            if not ids.size:
                continue
            self._absorbed[path.name] = offset + 8 * int(ids.size)
            if self._sorted.size:
                where = np.searchsorted(self._sorted, ids)
                where[where == self._sorted.size] = 0
                ids = ids[self._sorted[where] != ids]
            for value in ids.tolist():
                if value not in self._recent:
                    self._recent.add(value)
                    new += 1
        if len(self._recent) >= MERGE_AT:
            self._merge()
        return new

    def _roll(self, now: float) -> int:
        """Switch to the UTC day of `now` (at start and at midnight): load it, prune old days;
        take in what other writers appended (_absorb). Returns the posts that added today."""
        day = day_of(now)
        if day == self._day:
            return self._absorb()
        if self._day is not None:
            self._earlier[self._day] = self._today_count()
            self._reported = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._day = day
        self._recent = set()
        self._absorbed = {}
        self._sorted = self._load(day)
        self._scan_earlier(day)
        absorbed = self._absorb(force=True)
        try:
            self._fd = os.open(self._path(day), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            log.error("cannot open the billing ledger %s: %s", self._path(day), exc)
        return absorbed

    def _load(self, day: date) -> np.ndarray:
        path = self._path(day)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return np.empty(0, dtype=np.uint64)
        if size % 8:
            log.warning("billing ledger %s: cutting a torn last id (%d bytes)", path, size % 8)
            os.truncate(path, size - size % 8)
        return np.unique(np.fromfile(path, dtype="<u8").astype(np.uint64))

    def _scan_earlier(self, today: date) -> None:
        keep_from = cycle_start(
            cycle_start(today, self.budget.billing_cycle_day) - timedelta(days=1),
            self.budget.billing_cycle_day,
        )
        for day, paths in day_files(self.folder).items():
            if day >= today:
                continue
            if day < keep_from:
                for path in paths:
                    path.unlink(missing_ok=True)
                self._earlier.pop(day, None)
            elif day not in self._earlier:
                self._earlier[day] = count_day(paths)
