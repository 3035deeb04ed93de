"""Gap repair: the posts X matched while the stream was not connected, fetched again by search.

X does not resend what matched while no connection was open. Recent search
(`GET /2/tweets/search/recent`, every access level: the last 7 days, 100 posts a page, billed
per post like the stream) finds them again: for each live rule this collector owns (its tag
prefix, as `rules sync` owns rules), its value as the query, over
the span without connection widened by `x.repair_margin_seconds` on both sides. The posts come
back in X's search shape (`data`, `includes`, `meta`); each becomes one stream-shaped line

    {"data": post, "includes": {the entries this post refers to}, "matching_rules": [{"id", "tag"}]}

(a post found by several rules is one line naming them all), so every reader of the collection
reads repaired posts as streamed ones. The lines go into the spool as sealed files named
`{collector_id}-repair-{YYYYMMDDTHHMMSSZ}-{seq}.jsonl` (one per hour of created_at, so the
object lands in the dt=/hour= partition of its posts) and ship like any other file.

Not repairable (named in the log, `collector status` and the report):
- a rule with an operator only the stream knows (STREAM_ONLY_OPERATORS: search refuses it);
- a rule longer than search allows (512 characters, 4,096 on Enterprise: access.py);
- a span older than search's 7 days;
- a span in which X refused the stream for an account reason (credits depleted, the spending
  limit, the monthly cap: ACCOUNT_STATES rows with repaired_automatically False): repairing it
  right after the top-up would buy the whole refused span back at once (a monthly cap: days of
  posts charged to the new cycle). `repair_failed` says so and gives the `collector repair`
  command for it, by hand, with its cost.
- a span in which the budget paused the stream ([budget], collector.source.budget): the pause
  is there not to buy those posts, so it never becomes a span (`Repairs.on_paused`); the time
  the collector was stopped while paused counts from the end of the pause. `collector repair
  --from --to` buys such a span back by hand and says its cost first.
What search does not return at all (since 2026-05-04 keyword search returns no reposts;
accents match differently) is said in docs/collector.md.

Spans come from the data flow (`Repairs.on_connection`, told by XStream's on_flow): from the
last byte of a connection (or the stop of the previous process) to the first byte of the next
connection that delivers data, so a stall (a connection open but silent, over any number of
reconnects) is inside the span from its last byte on. They are kept
in the spool (`repair.json`, written atomically) until repaired, so a restart repairs what the
last process left. A repair waits until X can answer for the span's end (search refuses an
end_time less than 10 seconds before the request: the window ends END_TIME_LAG, 15 s, before
it is computed; a part newer than that, or older than 7 days, is named as not searched).
Each repair is three events: `repair_started`, then
`repair_done` (posts per rule, rules not repairable) or `repair_failed` (X's reason).

Sources: docs.x.com/x-api/posts/search (recent search: parameters, 7 days, 10-100 results,
next_token pagination, reverse-chronological order), docs.x.com/x-api/posts/filtered-stream
(rule operators available to the stream only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
import tweepy

from collector.config import Config
from collector.errors import RulesError
from collector.source.access import access_level
from collector.source.rules import desired_rules
from collector.source.stream import BACKFILL_MINUTES, TWEEPY_HOST, _Redirect
from collector.spool.layout import SpoolDirs, atomic_write, repair_file_name
from collector.spool.writer import DATA, Quarantine, SeqState, classify
from collector.telemetry.health import x_response_reason
from collector.telemetry.metrics import (
    REPAIR_LAST,
    REPAIR_NOT_REPAIRABLE,
    REPAIR_PENDING,
    REPAIR_POSTS_FETCHED,
    Metrics,
)
from collector.telemetry.status import REPAIR_STATE_FILE

log = logging.getLogger(__name__)

REPAIR_MODES = ("auto", "off")
# Operators a filtered-stream rule may use and recent search refuses (docs.x.com, "Build a
# rule": the operators marked as not available in search).
STREAM_ONLY_OPERATORS = (
    "sample:", "bio:", "bio_name:", "bio_location:", "followers_count:", "tweets_count:",
    "following_count:", "listed_count:", "url_title:", "url_description:", "url_contains:",
    "source:",
)  # fmt: skip
_STREAM_ONLY = re.compile(
    r"(?<![\w:])-?(" + "|".join(re.escape(op[:-1]) for op in STREAM_ONLY_OPERATORS) + "):"
)
SEARCH_WINDOW = timedelta(days=7)  # recent search: the last 7 days
RECOVERY_WINDOW = timedelta(hours=24)  # Enterprise Recovery: the last 24 hours
# A drop this long or shorter is in what backfill_minutes sends on the reconnect (Enterprise).
BACKFILL = timedelta(minutes=BACKFILL_MINUTES) - timedelta(seconds=2)
# Search refuses an end_time less than 10 s before the request; a repair asks for one at
# least 15 s old when it computes the window, so the request still qualifies when it is sent.
END_TIME_LAG = timedelta(seconds=15)
WINDOW_SLACK = timedelta(minutes=1)  # start_time this far inside the 7 days, for clock skew
PAGE_SIZE = 100  # max_results: X's maximum
CHUNK = timedelta(hours=1)  # one search per rule and hour: one file per hour partition
SERVER_RETRIES = 3  # 5xx / network errors per page before the repair fails
RETRY_WAIT = 5.0  # s, doubling
STATE_FILE = REPAIR_STATE_FILE
BUDGET_RECHECK = 600.0  # s: a repair the budget stopped is tried again after this
HEARTBEAT_SECONDS = 10.0  # while connected: the time a kill -9 would start a span from


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Span:
    """A half-open UTC interval [start, end) in which the stream was not connected; `refused`
    names X's account state when X refused the stream for an account reason within it."""

    start: datetime
    end: datetime
    refused: str | None = None

    def to_json(self) -> list[str]:
        pair = [iso(self.start), iso(self.end)]
        return pair + [self.refused] if self.refused else pair

    @classmethod
    def from_json(cls, pair: list[str]) -> Span:
        refused = pair[2] if len(pair) > 2 else None
        return cls(parse_iso(pair[0]), parse_iso(pair[1]), refused)

    def __str__(self) -> str:
        return f"{iso(self.start)} to {iso(self.end)}"


@dataclass(frozen=True)
class SearchRule:
    """A live rule: its value is the query, its id and tag go into matching_rules."""

    id: str
    value: str
    tag: str | None

    @property
    def name(self) -> str:
        return self.tag or self.value


def not_repairable_reason(value: str, query_max_length: int) -> str | None:
    """Why recent search cannot find what a rule matched (None when it can)."""
    operator = _STREAM_ONLY.search(re.sub(r'"[^"]*"', '""', value))  # not inside a phrase
    if operator:
        return f"'{operator[1]}:' is a stream-only operator: recent search refuses it"
    if len(value) > query_max_length:
        return (
            f"{len(value)} characters, over recent search's {query_max_length}-character query "
            "limit for this access level"
        )
    return None


def search_query_max_length(cfg: Config) -> int:
    return access_level(cfg.x.access_level).search_query_max_length


# ---------------------------------------------------------------- stream shape


def _ids(values) -> list[str]:
    return [str(v) for v in values or [] if v is not None]


def referenced_includes(post: dict, includes: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The entries of a search page's `includes` that `post` refers to, as the stream sends
    them with the post: its author first, replied-to and mentioned users, referenced posts
    and their authors, media, polls and places."""
    by_id = {
        kind: {str(e.get("media_key" if kind == "media" else "id")): e for e in entries}
        for kind, entries in includes.items()
        if isinstance(entries, list)
    }
    referenced = by_id.get("tweets", {})
    tweets = [referenced.get(i) for i in _ids(
        r.get("id") for r in post.get("referenced_tweets") or post.get("referenced_posts") or []
    )]  # fmt: skip
    found = [t for t in tweets if t]
    user_ids = _ids([post.get("author_id"), post.get("in_reply_to_user_id")])
    user_ids += _ids(m.get("id") for m in (post.get("entities") or {}).get("mentions") or [])
    user_ids += _ids(t.get("author_id") for t in found)
    attachments = post.get("attachments") or {}
    wanted = {
        "users": user_ids,
        "tweets": [str(t["id"]) for t in found],
        "media": _ids(attachments.get("media_keys")),
        "polls": _ids(attachments.get("poll_ids")),
        "places": _ids([(post.get("geo") or {}).get("place_id")]),
    }
    chosen: dict[str, list[dict]] = {}
    for kind, keys in wanted.items():
        entries, seen = [], set()
        for key in keys:
            entry = by_id.get(kind, {}).get(key)
            if entry is not None and key not in seen:
                seen.add(key)
                entries.append(entry)
        if entries:
            chosen[kind] = entries
    return chosen


def stream_line(post: dict, includes: dict, rules: list[SearchRule]) -> bytes:
    """One stream-shaped line (without the line break)."""
    message: dict = {"data": post}
    if includes:
        message["includes"] = includes
    message["matching_rules"] = [{"id": r.id, "tag": r.tag or ""} for r in rules]
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------- X


SNOWFLAKE_EPOCH_MS = 1_288_834_974_657  # X's ids hold their time: https://docs.x.com/x-ids


def _recovered_post(line: bytes) -> tuple[str, datetime, list[str]] | None:
    """(id, created_at from the id, matching rule tags) of a Recovery data line; None for
    a keep-alive or anything that is not a data message."""
    if not line or classify(line)[0] != DATA:
        return None
    message = json.loads(line)
    post_id = str(message["data"]["id"])
    millis = (int(post_id) >> 22) + SNOWFLAKE_EPOCH_MS
    at = datetime.fromtimestamp(millis / 1000, UTC)
    tags = [r.get("tag") or r.get("id") for r in message.get("matching_rules") or []]
    return post_id, at, [str(t) for t in tags]


class RepairFailed(Exception):
    """X refused or failed a search; the message is X's reason."""


class SearchClient:
    """tweepy's Client.search_recent_tweets pointed at x.api_base_url, page by page."""

    def __init__(self, cfg: Config, token: str, sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        # X's 429 carries x-rate-limit-reset: tweepy waits for it and asks again.
        self.client = tweepy.Client(token, return_type=dict, wait_on_rate_limit=True)
        self.client.session.mount(TWEEPY_HOST, _Redirect(cfg.x.api_base_url))
        self.sleep = sleep
        self.requests = 0

    def pages(self, query: str, start: datetime, end: datetime) -> Iterator[dict]:
        """Every page of posts matching `query` with start <= created_at < end (seconds)."""
        token = None
        while True:
            page = self._page(query, start, end, token)
            yield page
            token = (page.get("meta") or {}).get("next_token")
            if not token:
                return

    def _page(self, query: str, start: datetime, end: datetime, token: str | None) -> dict:
        x = self.cfg.x
        wait = RETRY_WAIT
        for attempt in range(SERVER_RETRIES + 1):
            try:
                self.requests += 1
                return (
                    self.client.search_recent_tweets(
                        query,
                        start_time=start,
                        end_time=end,
                        max_results=PAGE_SIZE,
                        next_token=token,
                        **x.fields.tweepy_arguments(),  # the fields the stream asks for
                    )
                    or {}
                )
            except (tweepy.TwitterServerError, requests.RequestException) as exc:
                if attempt == SERVER_RETRIES:
                    raise RepairFailed(_reason(exc)) from None
                log.warning("repair: search failed (%s); again in %.0f s", _reason(exc), wait)
                self.sleep(wait)
                wait *= 2
            except tweepy.HTTPException as exc:
                raise RepairFailed(_reason(exc)) from None
        raise AssertionError("unreachable")


def _reason(exc: Exception) -> str:
    """X's own words for a failed search: the problem's title and its errors' messages."""
    if isinstance(exc, tweepy.HTTPException):
        return x_response_reason(exc.response)
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


@dataclass
class OwnRules:
    """The rules a repair searches: this collector's live ones (tag prefix `collector_id:`,
    as `rules sync` owns them), the configured ones not live (tags) and how many live rules
    other clients of the X app hold (never searched: their posts are not this collection's,
    and each search is billed)."""

    live: list[SearchRule]
    not_live: list[str] = field(default_factory=list)
    others: int = 0


def live_rules(cfg: Config, token: str) -> OwnRules:
    """This collector's live rules (collector.source.rules.tag_prefix), or the configured ones
    when X cannot be asked (ids then unknown: "")."""
    from collector.source.rules import RulesClient, tag_prefix

    try:
        live = RulesClient(cfg, token).list()
    except RulesError as exc:
        log.warning("repair: cannot list the live rules (%s); using the configured ones", exc)
        return OwnRules([SearchRule("", value, tag) for value, tag in desired_rules(cfg)])
    prefix = tag_prefix(cfg)
    ours = [SearchRule(r.id, r.value, r.tag) for r in live if (r.tag or "").startswith(prefix)]
    held = {(r.value, r.tag) for r in ours}
    not_live = [tag for value, tag in desired_rules(cfg) if (value, tag) not in held]
    return OwnRules(ours, not_live, len(live) - len(ours))


# ---------------------------------------------------------------- the spool


class MicrosecondSeq:
    """File numbers for `collector repair` by hand: microseconds since the epoch, increasing,
    so they never meet the small numbers of the running collector's SeqState."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def reserve(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return self._last


class RepairFiles:
    """Writes repaired lines as sealed spool files, one or more per hour of created_at.

    The file's sequence number comes from the spool writer's SeqState (shared, so numbers are
    never reused); each line is checked as a streamed one (classify: a complete JSON data
    message in UTF-8; anything else goes to quarantine) before it is kept.
    """

    def __init__(
        self,
        cfg: Config,
        dirs: SpoolDirs,
        seq: SeqState | MicrosecondSeq,
        submit: Callable[[Path], None],
        quarantine: Quarantine,
    ) -> None:
        self.cfg = cfg
        self.dirs = dirs
        self.seq = seq
        self.submit = submit
        self.quarantine = quarantine

    def write(self, first_at: datetime, lines: list[bytes]) -> list[str]:
        """Seal `lines` into files named from `first_at`; returns the file names."""
        kept = []
        for line in lines:
            kind, reason = classify(line)
            if kind == DATA:
                kept.append(line)
            else:
                self.quarantine.keep(line, f"repair-{reason or kind}")
        names = []
        size = self.cfg.rotate.max_records
        for index in range(0, len(kept), size):
            name = repair_file_name(self.cfg.collector_id, first_at, self.seq.reserve())
            path = self.dirs.sealed / name
            atomic_write(path, b"".join(line + b"\n" for line in kept[index : index + size]))
            self.submit(path)
            names.append(name)
        return names


# ---------------------------------------------------------------- one repair


@dataclass
class RepairResult:
    span: Span
    searched: Span | None = None  # the search window (margins, the 7 days)
    posts: int = 0  # distinct posts fetched again
    per_rule: dict[str, int] = field(default_factory=dict)  # rule tag (or value) -> posts
    not_repairable: list[dict] = field(default_factory=list)  # {"rule", "reason"}
    failed: str | None = None
    files: list[str] = field(default_factory=list)
    requests: int = 0
    # "search", "backfill" (Enterprise), "recovery" (Enterprise), "none" (X refused: by hand)
    method: str = "search"
    note: str = ""
    not_searched: list[str] = field(default_factory=list)  # parts outside the search window
    not_live: list[str] = field(default_factory=list)  # configured rule tags not live on X

    def detail(self) -> dict:
        doc: dict = {"from": iso(self.span.start), "to": iso(self.span.end)}
        if self.searched is not None:
            doc["searched"] = self.searched.to_json()
        if self.not_searched:
            doc["not_searched"] = self.not_searched
        if self.not_live:
            doc["not_live"] = self.not_live
        doc |= {"posts": self.posts, "rules": self.per_rule}
        doc["not_repairable"] = self.not_repairable
        doc["requests"] = self.requests
        doc["method"] = self.method
        if self.failed:
            doc["failed"] = self.failed
        return doc

    def summary(self) -> str:
        if self.failed and self.method == "none":
            return f"gap {self.span} not repaired: {self.failed}"
        if self.failed:
            return f"repair of {self.span} failed: {self.failed}"
        if self.method == "backfill":
            return f"repaired {self.span} by backfill: {self.note}"
        counts = ", ".join(f"{name} {n}" for name, n in self.per_rule.items()) or "no rule"
        how = " by Recovery" if self.method == "recovery" else ""
        what = f"{self.span}"
        if self.not_searched and self.searched is not None:
            what = f"{self.searched} of {self.span}"
        text = f"repaired {what}{how}: {self.posts} post(s) fetched again ({counts})"
        if self.not_searched:
            text += "; " + "; ".join(self.not_searched)
        if self.not_live:
            text += (
                f"; configured but not live on X, not searched: {', '.join(self.not_live)} "
                "(`collector rules sync` makes them live)"
            )
        if self.not_repairable:
            names = "; ".join(f"{r['rule']} ({r['reason']})" for r in self.not_repairable)
            text += f"; not repairable: {names}"
        return text


class Repairer:
    """Repairs one span at a time: search per rule, lines into the spool, events.

    `events.record(kind, cause, detail=...)` (EventLog) gets repair_started / repair_done /
    repair_failed; `ledger` (optional: add(ids), exhausted()) counts what search returns as X
    bills it and stops the repair when the budget is spent.
    """

    def __init__(
        self,
        cfg: Config,
        token: str,
        files: RepairFiles,
        events=None,
        metrics: Metrics | None = None,
        ledger=None,
        clock: Callable[[], float] = time.time,
        search: SearchClient | None = None,
        backfilled_reconnects: bool = False,
    ) -> None:
        self.cfg = cfg
        self.token = token
        self.files = files
        self.events = events
        self.metrics = metrics or Metrics()
        self.ledger = ledger
        self.clock = clock
        self.search = search or SearchClient(cfg, token)
        # the running collector's connections ask for backfill_minutes (stream.backfills)
        self.backfilled_reconnects = backfilled_reconnects

    def announce(self) -> None:
        """Name the configured rules search cannot repair, once at start (log and status)."""
        limit = search_query_max_length(self.cfg)
        named = []
        for value, tag in desired_rules(self.cfg):
            reason = not_repairable_reason(value, limit)
            if reason and access_level(self.cfg.x.access_level).recovery:
                reason += " (Enterprise: by search only, for spans older than Recovery's 24 h)"
            if reason:
                named.append(f"{tag}: {reason}")
                log.warning("repair: rule %r (tag %s) is not repairable: %s", value, tag, reason)
        self.metrics.set(REPAIR_NOT_REPAIRABLE, named or None)

    def refused(self, span: Span) -> RepairResult:
        """A span X refused for an account reason: not repaired automatically (a repair is
        billed; right after a top-up it would buy back the whole refused span at once)."""
        result = RepairResult(span, method="none")
        command = f"collector repair --from {iso(span.start)} --to {iso(span.end)}"
        result.failed = (
            f"X refused for {span.refused}; repair by hand with `{command}` (it prints the "
            f"posts and their cost, ${self.cfg.budget.usd_per_post} each)"
        )
        self._finish(result)
        return result

    def window(self, span: Span) -> Span | None:
        """The search window: the span with its margins at whole seconds (start rounded down,
        end up), cut to what search answers for: the last 7 days, and an end_time at least
        END_TIME_LAG before now; None when none of it is searchable."""
        oldest, latest = self.searchable()
        wanted = self.widened(span)
        start, end = max(wanted.start, oldest), min(wanted.end, latest)
        return Span(start, end) if start < end else None

    def searchable(self) -> tuple[datetime, datetime]:
        """(oldest start_time, latest end_time) recent search answers for now, whole seconds."""
        now = self.clock()
        oldest = datetime.fromtimestamp(
            math.ceil(now - (SEARCH_WINDOW - WINDOW_SLACK).total_seconds()), UTC
        )
        latest = datetime.fromtimestamp(math.floor(now - END_TIME_LAG.total_seconds()), UTC)
        return oldest, latest

    def widened(self, span: Span) -> Span:
        """The span with its margins, at whole seconds (start rounded down, end up)."""
        margin = timedelta(seconds=self.cfg.x.repair_margin_seconds)
        start = (span.start - margin).replace(microsecond=0)
        end = datetime.fromtimestamp(math.ceil((span.end + margin).timestamp()), UTC)
        return Span(start, end)

    def not_searched(self, span: Span, window: Span | None) -> list[str]:
        """The parts of the span (with its margins) outside the search window, and why."""
        if window is None:
            return []  # the failure says why
        wanted = self.widened(span)
        oldest, latest = self.searchable()
        parts = []
        if wanted.start < oldest:
            parts.append(
                f"{Span(wanted.start, min(oldest, wanted.end))} not searched (older than recent "
                "search's 7 days)"
            )
        if wanted.end > latest:
            parts.append(
                f"{Span(max(latest, wanted.start), wanted.end)} not searched (less than "
                f"{END_TIME_LAG.seconds} s old: X's search refuses an end_time less than 10 s "
                "before the request; run it again for that part)"
            )
        return parts

    def repair(self, span: Span) -> RepairResult:
        level = access_level(self.cfg.x.access_level)
        now = datetime.fromtimestamp(self.clock(), UTC)
        if level.backfill and self.backfilled_reconnects and span.end - span.start <= BACKFILL:
            return self._by_backfill(span)
        if level.recovery and span.start - self._margin() >= now - RECOVERY_WINDOW + WINDOW_SLACK:
            return self._by_recovery(span)
        return self._by_search(span)

    def _margin(self) -> timedelta:
        return timedelta(seconds=self.cfg.x.repair_margin_seconds)

    def _by_backfill(self, span: Span) -> RepairResult:
        """A drop X's backfill_minutes covered on the reconnect (Enterprise): nothing to fetch."""
        result = RepairResult(span, method="backfill")
        result.searched = Span(span.end - BACKFILL, span.end)
        self._record("repair_started", f"{span}: backfill_minutes on the reconnect", result)
        result.note = f"the reconnect asked X for the last {BACKFILL_MINUTES} minutes"
        self._finish(result)
        return result

    def _by_recovery(self, span: Span) -> RepairResult:
        """Enterprise Recovery: the filtered stream with start_time/end_time re-streams the
        period (every live rule, stream-only operators too), then ends."""
        result = RepairResult(span, method="recovery")
        now = datetime.fromtimestamp(self.clock(), UTC)
        start = (span.start - self._margin()).replace(microsecond=0)
        end = min(span.end + self._margin(), now)
        end = datetime.fromtimestamp(math.ceil(end.timestamp()), UTC)
        result.searched = Span(start, end)
        self._record("repair_started", f"{span}: Recovery", result)
        spent = self._spent()
        try:
            if spent:
                raise RepairFailed(f"the budget is spent ({spent}): Recovery is billed per post")
            self._recover(result.searched, result)
        except RepairFailed as exc:
            result.failed = str(exc)
        result.requests = 1
        self._finish(result)
        return result

    def _recover(self, window: Span, result: RepairResult) -> None:
        params = {
            name.replace("_fields", ".fields"): ",".join(values)
            for name, values in self.cfg.x.fields.tweepy_arguments().items()
            if values
        }
        params |= {"start_time": iso(window.start), "end_time": iso(window.end)}
        session = requests.Session()
        url = f"{self.cfg.x.api_base_url.rstrip('/')}/2/tweets/search/stream"
        headers = {"Authorization": f"Bearer {self.token}"}
        hour: datetime | None = None
        lines: list[bytes] = []
        seen: set[str] = set()
        try:
            with session.get(url, params=params, headers=headers, stream=True,
                             timeout=(10, 120)) as response:  # fmt: skip
                if response.status_code != 200:
                    raise RepairFailed(_reason(tweepy.HTTPException(response)))
                for line in response.iter_lines():
                    post = _recovered_post(line)
                    if post is None or post[0] in seen:
                        continue
                    seen.add(post[0])
                    post_hour = post[1].replace(minute=0, second=0, microsecond=0)
                    if lines and hour is not None and post_hour != hour:  # one file an hour
                        result.files += self.files.write(hour, lines)
                        lines = []
                    hour = post_hour
                    lines.append(line)
                    for rule in post[2]:
                        result.per_rule[rule] = result.per_rule.get(rule, 0) + 1
                    self._bill([post[0]], 1)
        except requests.RequestException as exc:
            raise RepairFailed(_reason(exc)) from None
        finally:
            if lines and hour is not None:
                result.files += self.files.write(hour, lines)
            result.posts = len(seen)

    def _by_search(self, span: Span) -> RepairResult:
        result = RepairResult(span)
        requests_before = self.search.requests
        own = live_rules(self.cfg, self.token)
        result.not_live = own.not_live
        if own.not_live:
            log.warning("repair: configured rule(s) not live on X, not searched: %s (`collector "
                        "rules sync` makes them live)", ", ".join(own.not_live))  # fmt: skip
        if own.others:
            log.info("repair: %d live rule(s) of other clients (other tag prefixes) left out",
                     own.others)  # fmt: skip
        limit = search_query_max_length(self.cfg)
        searchable = []
        for rule in own.live:
            reason = not_repairable_reason(rule.value, limit)
            if reason:
                result.not_repairable.append({"rule": rule.name, "reason": reason})
                log.warning("repair: rule %r (tag %s) is not repairable: %s",
                            rule.value, rule.tag, reason)  # fmt: skip
            else:
                searchable.append(rule)
                result.per_rule[rule.name] = 0
        self._record("repair_started", f"{span}: {len(searchable)} rule(s) to search", result)
        window = self.window(span)
        problem = self._refusal(span, window)
        result.not_searched = self.not_searched(span, window)
        if problem or window is None:  # _refusal names the missing window
            result.failed = problem
        else:
            result.searched = window
            try:
                self._search(window, searchable, result)
            except RepairFailed as exc:
                result.failed = str(exc)
        result.requests = self.search.requests - requests_before
        self._finish(result)
        return result

    def _refusal(self, span: Span, window: Span | None) -> str | None:
        if window is None:
            oldest, latest = self.searchable()
            if self.widened(span).start >= latest:
                return (
                    f"nothing to search yet: the span starts after {iso(latest)}, "
                    f"{END_TIME_LAG.seconds} s ago (X's search refuses an end_time less than "
                    "10 s before the request); run it again later"
                )
            return "the span is older than recent search's 7 days"
        spent = self._spent()
        if spent:
            return f"the budget is spent ({spent}): a repair is billed like the stream"
        return None

    def _spent(self):
        """The ledger's Exhausted when the budget is spent and `budget.on_exhausted` pauses."""
        if self.ledger is None or self.cfg.budget.on_exhausted != "pause":
            return None
        return self.ledger.exhausted()

    def _search(self, window: Span, rules: list[SearchRule], result: RepairResult) -> None:
        start = window.start
        while start < window.end:
            end = min(window.end, start.replace(minute=0, second=0) + CHUNK)
            self._search_chunk(Span(start, end), rules, result)
            start = end

    def _search_chunk(self, chunk: Span, rules: list[SearchRule], result: RepairResult) -> None:
        """Search each rule over one hour; store what was found even when a search fails or
        the budget stops the repair (received posts are never dropped)."""
        found: dict[str, tuple[dict, dict, list[SearchRule]]] = {}
        try:
            for rule in rules:
                for page in self.search.pages(rule.value, chunk.start, chunk.end):
                    includes = page.get("includes") or {}
                    posts = page.get("data") or []
                    new = []
                    for post in posts:
                        entry = found.get(str(post.get("id")))
                        if entry is None:
                            found[str(post.get("id"))] = (post, includes, [rule])
                            new.append(str(post.get("id")))
                        elif rule not in entry[2]:
                            entry[2].append(rule)
                    result.per_rule[rule.name] += len(posts)
                    self._bill([str(p.get("id")) for p in posts], len(new))
        finally:
            if found:
                lines = [
                    stream_line(post, referenced_includes(post, includes), matched)
                    for post, includes, matched in sorted(
                        found.values(), key=lambda e: int(e[0]["id"])
                    )
                ]
                result.files += self.files.write(chunk.start, lines)
                result.posts += len(found)

    def _bill(self, ids: list[str], new_posts: int) -> None:
        """Count `new_posts` distinct posts fetched (a post several rules find is one) and
        add `ids` to the ledger (which counts a post once per UTC day, as X bills)."""
        self.metrics.incr(REPAIR_POSTS_FETCHED, new_posts)
        if self.ledger is not None and ids:
            self.ledger.add(ids)
            spent = self._spent()
            if spent:
                raise RepairFailed(f"the budget is spent ({spent}); the rest of the span waits")

    def _finish(self, result: RepairResult) -> None:
        self.metrics.set(REPAIR_LAST, result.summary())
        self.metrics.set(
            REPAIR_NOT_REPAIRABLE,
            [f"{r['rule']}: {r['reason']}" for r in result.not_repairable] or None,
        )
        if result.failed:
            (log.warning if result.method == "none" else log.error)("%s", result.summary())
            self._record("repair_failed", result.failed, result)
        else:
            log.info("%s", result.summary())
            self._record("repair_done", result.summary(), result)

    def _record(self, kind: str, cause: str, result: RepairResult) -> None:
        if self.events is not None:
            self.events.record(kind, cause, detail=result.detail())


# ---------------------------------------------------------------- spans from the events


class Repairs:
    """Turns connection changes into spans and repairs them in a thread, one at a time.

    State (`{spool}/repair.json`): `down_since` (the stream is not connected since then; kept
    across a stop, so the next process repairs the time it was not running), `alive_at` (the
    last byte the stream received, written every HEARTBEAT_SECONDS while data flows: the start
    of the span after a kill -9, a stall before it included) and
    `pending` spans not yet repaired, `refused` (X's account state when X refused the stream
    for an account reason since `down_since`: that span waits for a repair by hand),
    `paused_until` (the budget paused the stream until then: no span is open while paused).
    """

    def __init__(self, cfg: Config, dirs: SpoolDirs, repairer: Repairer | None) -> None:
        self.cfg = cfg
        self.path = dirs.root / STATE_FILE
        self.repairer = repairer
        self._lock = threading.Lock()
        self._wake: queue.Queue[None] = queue.Queue()
        state = self._load()
        self.down_since: datetime | None = state.get("down_since")
        self.alive_at: datetime | None = state.get("alive_at")
        self.pending: list[Span] = state.get("pending", [])
        self.refused: str | None = state.get("refused")
        self.paused_until: datetime | None = state.get("paused_until")
        if self.down_since is None and self.alive_at is not None:
            # The previous process ended without a disconnect or stop (killed): its last
            # sign of life starts the span.
            self.down_since = self.alive_at
        self.connected = False
        self._not_before = 0.0  # monotonic: no repair before (after a budget refusal)
        self.metrics: Metrics | None = repairer.metrics if repairer else None
        # when the stream last received a byte (XStream.last_data_at): a heartbeat during a
        # stall records that, not the time it runs, so a kill -9 in a stall repairs all of it
        self.last_data: Callable[[], datetime | None] = lambda: None

    def _load(self) -> dict:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.error("repair state %s is unreadable; starting without pending repairs", self.path)
            return {}
        state: dict = {}
        for key in ("down_since", "alive_at", "paused_until"):
            if doc.get(key):
                state[key] = parse_iso(doc[key])
        state["pending"] = [Span.from_json(pair) for pair in doc.get("pending", [])]
        state["refused"] = doc.get("refused")
        return state

    def _save(self) -> None:
        doc = {
            "down_since": iso(self.down_since) if self.down_since else None,
            "alive_at": iso(self.alive_at) if self.alive_at and self.connected else None,
            "pending": [span.to_json() for span in self.pending],
            "refused": self.refused,
            "paused_until": iso(self.paused_until) if self.paused_until else None,
        }
        try:
            atomic_write(self.path, json.dumps(doc).encode() + b"\n")
        except OSError as exc:
            log.warning("cannot write the repair state %s: %s", self.path, exc)

    def on_connection(self, state: str, at: datetime | None = None) -> None:
        """The stream connected or stopped being connected (`connected` / anything else)."""
        at = at or datetime.now(UTC)
        with self._lock:
            if state == "connected":
                self.connected = True
                self.alive_at = at
                if self.down_since is not None and self.down_since < at:
                    self.pending.append(Span(self.down_since, at, self.refused))
                    self._wake.put(None)
                self.down_since = None
                self.refused = None
                self.paused_until = None
            elif self.paused_until is not None:
                # Paused by the budget: not a gap. Stopped while paused, the span not running
                # starts when the pause would have ended (a restart before then opens none).
                if state == "stop":
                    self.down_since = max(at, self.paused_until)
            else:
                if self.connected or self.down_since is None:
                    self.down_since = at
                self.connected = False
            self._save()
        self._publish()

    def on_paused(self, until: datetime, at: datetime | None = None) -> None:
        """The budget closed the stream until `until` (collector.source.budget): a span open
        before the pause ends at it; the pause itself is not repaired (it is there not to buy
        those posts), nor is it after the resume."""
        at = at or datetime.now(UTC)
        with self._lock:
            if not self.connected and self.down_since is not None and self.down_since < at:
                self.pending.append(Span(self.down_since, at, self.refused))
                self._wake.put(None)
            self.down_since = None
            self.refused = None
            self.connected = False
            self.paused_until = until
            self._save()
        self._publish()

    def on_refused(self, account_state: str) -> None:
        """X refused the stream for an account reason (collector.source.account rows with
        repaired_automatically False): the span now open is left for a repair by hand."""
        with self._lock:
            if self.refused != account_state:
                self.refused = account_state
                self._save()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.set(REPAIR_PENDING, len(self.pending))

    def heartbeat(self) -> None:
        with self._lock:
            if self.connected:
                self.alive_at = self.last_data() or datetime.now(UTC)
                self._save()

    def due(self, span: Span, now: float) -> float:
        """Seconds until X can answer for the whole span (margin + END_TIME_LAG)."""
        ready = span.end + timedelta(seconds=self.cfg.x.repair_margin_seconds) + END_TIME_LAG
        return max(0.0, ready.timestamp() + 1 - now)

    def run_once(self, stop: threading.Event) -> bool:
        """Repair the oldest pending span once it is due; True when one was repaired."""
        with self._lock:
            span = self.pending[0] if self.pending else None
        if span is None or self.repairer is None:
            return False
        if span.refused:
            self.repairer.refused(span)
            with self._lock:
                self.pending.remove(span)
                self._save()
            self._publish()
            return True
        wait = max(self.due(span, self.repairer.clock()), self._not_before - time.monotonic())
        if wait > 0:
            stop.wait(min(wait, HEARTBEAT_SECONDS))
            return False
        result = self.repairer.repair(span)
        with self._lock:
            if result.failed and "budget" in result.failed:
                self._not_before = time.monotonic() + BUDGET_RECHECK
                return False  # kept: repaired once the budget allows
            self.pending.remove(span)
            self._save()
        self._publish()
        return True

    def run(self, stop: threading.Event) -> threading.Thread:
        def loop() -> None:
            last_beat = 0.0
            while not stop.is_set():
                try:
                    if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                        self.heartbeat()
                        last_beat = time.monotonic()
                    if not self.run_once(stop) and not self.pending:  # wait for a span
                        with contextlib.suppress(queue.Empty):
                            self._wake.get(timeout=1.0)
                except Exception:  # a bug must not end the repairs for good
                    log.exception("repair failed unexpectedly")
                    stop.wait(RETRY_WAIT)

        thread = threading.Thread(target=loop, name="repair", daemon=True)
        thread.start()
        return thread
