"""A stand-in for the X API v2 streaming endpoints, speaking the real wire protocol on loopback.

    srv = FakeXServer(token="t0ken", port=0); srv.start(); srv.url   # "http://127.0.0.1:PORT"
    srv.sent_ids       # ids of posts whose whole line, "\\r\\n" included, was written to a socket
    srv.connections, srv.connection_times, srv.streams_open, srv.last_keepalive_at   # to wait on
    srv.stream_queries # each stream request's query: what the client asked X for
    srv.stop()

Endpoints (same paths, status codes and JSON shapes as api.x.com):
    GET  /2/tweets/search/stream, /2/tweets/sample/stream   chunked, one JSON message per "\\r\\n"
         line, a blank "\\r\\n" keep-alive every `keepalive_interval` seconds when idle
    GET  /2/tweets/search/stream/rules                      {"data": [...], "meta": {...}}
    POST /2/tweets/search/stream/rules[?dry_run=true]       {"add": [...]} or
                                                            {"delete": {"ids": [...]}}
    Wrong or missing bearer token: 401 with the API's problem JSON.

Refusals, as X answers them:
    POST rules, a value over `rule_max_length` (1,024, X's pay-per-use limit): 200 with
        {"errors": [{"value", "details": [...], "title": "UnprocessableEntity",
        "type": ".../problems/invalid-rules"}]} and meta.summary invalid=1 (the shape of X's
        answers quoted in tweepy#1874; the wording of `details` is ours)
    POST rules, a value X cannot parse (unbalanced parentheses or quotes, an operator X does not
        know, a dangling OR, a lower-case or): the same invalid-rules error with X's sentence
        (tests/fakes/x_rule_syntax.py)
    POST rules, a value already live or repeated in the request: 200 with a DuplicateRule
        error naming the id of the rule that holds the value
    GET the filtered stream while no rule is live: 409 ConnectionException with
        connection_issue "RuleConfigurationIssue" (body quoted in tweepy#1934)
    refuse_streams(429, "UsageCapExceeded"): every stream connection gets X's usage-capped
        problem (body quoted in xdevplatform/xdk#25) until refuse_streams(None)
    refuse_streams(402, "CreditsDepleted" | "Payment Required"): X's two credits-depleted
        bodies; refuse_streams(402, "SpendingLimit"): the spending limit (NAMED_PROBLEMS)
    the connection limit, stale connections and the Connections API:
        tests/fakes/x_api_connections.py; the usage endpoints: tests/fakes/x_api_usage.py
    disconnect_every_connection = True: every stream connection is accepted (200), sends the
        operational-disconnect message and closes, as X does during incidents

Post ids are snowflakes of the time they are sent (unique across restarts, as X's) and
`created_at` is the time the id holds. About 15% of posts are reposts ("RT @user: ",
referenced_tweets type "retweeted"); some carry media (half with alt text), a poll, a place
(some with coordinates) or an edit history of two versions.

Fields, as X sends them: only what the request names. Without `tweet.fields` a post is id, text
and edit_history_tweet_ids; `tweet.fields`, `expansions`, `user.fields`, `media.fields`,
`poll.fields` and `place.fields` add the rest, `includes` holds the expanded objects (users:
the author first, as the author_id expansion puts it), each with its default fields plus those
asked for. An object an expansion names that the stand-in does not hold (some reposts' and
quotes' posts, media, places) is left out of `includes` and named in the message's `errors`, X's
partial resource-not-found error (`not_found`). A name X does not accept gets X's 400
invalid-request naming it. Any endpoint that
returns posts renders them the same way:
    srv.render_post(post_id, query) -> b'{"data": {...}, "includes": {...}}'
    (query: {"tweet.fields": "a,b", ...} or parse_qs's lists; rendering is cached per field set)
    srv.messages       # the posts with every field, before a request's fields apply (tests
                       # may edit them before the first stream)

Knobs, set from tests at runtime (thread-safe; each one-shot knob fires once):
    rate (posts/s, 0 = as fast as possible), count (stop after N posts in total and keep the
    connection open with keep-alives), keepalive_interval (s)
    note_share (0-1)         share of posts that are long posts: `text` cut near 280 characters,
                             the full 4,000-character text and its entities in `note_tweet`
    renamed_fields (bool)    answer with OpenAPI 2.167's spellings: edit_history_post_ids,
                             note_post, referenced_posts (live X still sends the old ones)
    drop_after(k)            the next stream connection writes k posts, half a line, then closes
    fail_next(status, n)     the next n stream connection attempts get `status` (503, 429, ...)
    stall(seconds)           every open stream sends nothing, not even keep-alives, for that long;
                             the posts X matches meanwhile are missed (the timeline), as a
                             stalled connection delivers nothing and X does not resend
    operational_disconnect() the open stream sends the operational-disconnect message and closes
    inject(kind)             the open stream sends one special line: "malformed",
                             "balanced_cut" (cut where its braces balance), "non_utf8",
                             "lone_surrogate" (a post whose text starts with \\ud83d alone),
                             "control_chars" (a post whose text starts with a\\u0000b\\u0007),
                             "huge" (a 10 MB data post, its id lands in sent_ids),
                             "partial_errors" (a data post that also carries "errors") or
                             "overflow_id" (a data post whose id does not fit 64 bits)

The same knobs over HTTP for processes started through the CLI (no bearer token needed):
    GET /_fake/stats -> {"sent": N, "missed": N, "first_byte_at": epoch, "last_post_at": epoch,
                         ...}   (missed: posts made while no stream was open, the timeline)
    POST /_fake/control {"rate": 0, "count": 10, "drop_after": 3, "fail_next": [503, 2],
                         "stall": 5, "operational_disconnect": true, "inject": "malformed",
                         "note_share": 0.1, "renamed_fields": true}
    X's account states (docs/collector.md, "Trying it on one machine"):
    POST /_fake/control {"refuse_streams": [402, "CreditsDepleted"]}   credits depleted
                        {"refuse_streams": [402, "SpendingLimit"]}     the spending limit
                        {"refuse_streams": [429, "UsageCapExceeded"]}  the monthly cap
                        {"refuse_streams": null}                       X accepts again
                        {"connection_limit": 1, "stale_connection": 600}   a dead run's
                            connection X still counts for 600 s (429 TooManyConnections)
                        {"connections_api": 404}                       the Connections API
                            not available to the project (null: available again)
                        {"usage_cap": 100, "usage_credits": {"total_balance": -0.02}}
                            what GET /2/usage/tweets and /2/usage/credits answer

Extensions: every endpoint family beyond the stream and the rules (usage, counts, search,
connections, compliance...) lives in its own module `tests/fakes/x_api_<family>.py`, imported
here by name pattern, which registers on import:
    @route("GET", "/2/usage/tweets")            def usage(handler, params): ...
    @route("DELETE", "/2/connections/{id}")     params == {"id": "..."} (query in handler.query)
    @knob("credits_depleted")                   def _(fake, value): ...   (/_fake/control key)
    @stats_part                                 def _(fake) -> dict: ...  (merged into stats())
A module keeps its per-server state in `fake.ext["<family>"]`. Handlers answer with
`handler.send_json(status, body, headers)`, check the token with `handler.authorized()` (it
answers 401 itself), read a JSON body with `handler.read_json()`; `handler.send_empty(status)`
answers without a body. Every answer carries X's `api-version` header (knob `api_version`).

The timeline: from the first stream connection attempt on, while no stream connection is open
(none made, refused, or dropped) posts keep being made at `rate` posts/s (not when rate is 0)
and are kept as missed: `fake.missed_posts(start, end)` -> [MissedPost(id, at, rules)], the
posts X matched against the live rules while nobody was connected, which X does not resend.
Their ids are snowflakes of the time they were made, so `created_at` is that time.
`fake.timeline_posts(start, end)` is every post X made in the span, streamed (each post a
stream took, whether or not its reader got it: a killed reader's socket still takes posts
until X notices) and missed alike: what recent search (x_api_search.py) answers from, as X's
search finds every matching post whether a stream delivered it or not.

The bill: `fake.billed` maps a UTC day ("YYYY-MM-DD", from `fake.clock()`) to the set of post ids
delivered that day, as X bills pay-per-use reads (a post delivered twice in one UTC day is billed
once). The stream records what it writes; any endpoint that returns posts calls
`fake.record_delivered(ids)`.

CLI (used by the sandbox and `make bench`):
    python -m tests.fakes.x_server --host 127.0.0.1 --port P --token-file F [--rate R] [--count N]
        [--rule VALUE ...]   (rules live from the start, so a plain client may connect at once)
        [--note-share S] [--renamed-fields] [--seed N]   (--help says what each does)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import functools
import importlib
import itertools
import json
import logging
import math
import pkgutil
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.x_rule_syntax import rule_syntax_problems

log = logging.getLogger(__name__)

SAMPLES = Path(__file__).resolve().parent / "data" / "x_v2_filtered_stream.jsonl"
STREAM_PATHS = {"/2/tweets/search/stream", "/2/tweets/sample/stream"}
RULES_PATH = "/2/tweets/search/stream/rules"
# Post ids are X's snowflakes: milliseconds since X's epoch shifted left 22 bits, a sequence in
# the low bits, so they are unique across restarts of the stand-in and `created_at` is the time
# the id holds. https://developer.x.com/en/docs/x-ids
SNOWFLAKE_EPOCH_MS = 1_288_834_974_657
ID_MARK = b"__POST_ID__"
CREATED_AT_MARK = b"__CREATED_AT_UTC_ISO8601"  # as long as "2026-11-30T00:37:01.815Z"
EDITABLE_UNTIL_MARK = b"__EDITABLE_UNTIL_ISO8601"  # edit_controls: created_at + 60 min
EDIT_WINDOW_MS = 60 * 60 * 1000  # a post can be edited for an hour after it is created
BATCH_BYTES = 256 * 1024  # posts per write when sending as fast as possible
HUGE_LINE_BYTES = 10 * 1024 * 1024
AUTHORS = 40  # distinct accounts the posts come from
REPOST_SHARE = 0.15  # the samples hold originals, replies and quotes; some posts are reposts
POLL_SHARE = 0.08  # posts with a poll (attachments.poll_ids)
EDITED_SHARE = 0.05  # posts that are the edited version of an earlier one
NOTE_CHARS = 4000  # a long post's full text (X Premium allows up to 25,000 characters)
NOTE_CUT = 280  # `text` of a long post is cut near this many characters
NOTE_TEMPLATES = 8

OPERATIONAL_DISCONNECT = {
    "errors": [
        {
            "title": "operational-disconnect",
            "disconnect_type": "OperationalDisconnect",
            "detail": "This stream has been disconnected for operational reasons.",
            "type": "https://api.twitter.com/2/problems/operational-disconnect",
        }
    ]
}
PARTIAL_ERROR = {
    "value": "1234567890",
    "detail": "Could not find user with id: [1234567890].",
    "title": "Not Found Error",
    "resource_type": "user",
    "parameter": "entities.mentions.username",
    "resource_id": "1234567890",
    "type": "https://api.twitter.com/2/problems/resource-not-found",
}
PROBLEMS = {
    401: {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"},
    429: {
        "title": "ConnectionException",
        "detail": "This stream is currently at the maximum allowed connection limit.",
        "connection_issue": "TooManyConnections",
        "type": "https://api.twitter.com/2/problems/streaming-connection",
    },
    409: {
        "title": "ConnectionException",
        "detail": "You must define rules using the POST /2/tweets/search/stream/rules endpoint "
        "before connecting to filtered stream.",
        "connection_issue": "RuleConfigurationIssue",
        "type": "https://api.twitter.com/2/problems/streaming-connection",
    },
    503: {
        "title": "Service Unavailable",
        "detail": "Service Unavailable",
        "type": "about:blank",
        "status": 503,
    },
}
# Problems that share a status code, by title (refuse_streams).
NAMED_PROBLEMS = {
    "UsageCapExceeded": {
        "account_id": "1234567890",
        "product_name": "standard-basic",
        "title": "UsageCapExceeded",
        "period": "Monthly",
        "scope": "Product",
        "detail": "Usage cap exceeded: Monthly product cap",
        "type": "https://api.twitter.com/2/problems/usage-capped",
    },
    "TooManyConnections": PROBLEMS[429],
    "RuleConfigurationIssue": PROBLEMS[409],
    # 402 when the pay-per-use balance is spent: both bodies seen in public reports (the first
    # in koala73/worldmonitor#7156 and client code quoting X's 402, the second with api.x.com's
    # problem host); refuse_streams(402, "CreditsDepleted") or (402, "Payment Required").
    "CreditsDepleted": {
        "title": "CreditsDepleted",
        "detail": "Your enrolled account [1234567890] does not have any credits to fulfill "
        "this request.",
        "type": "https://api.twitter.com/2/problems/credits",
    },
    "Payment Required": {
        "title": "Payment Required",
        "detail": "credits depleted",
        "type": "https://api.x.com/2/problems/credits-depleted",
    },
    # The spending limit set in the Developer Console: X documents the behaviour ("When the limit
    # is reached, API requests will be blocked until the next billing cycle", xdevplatform/docs
    # x-api/getting-started/pricing.mdx) but not the body; this body's wording is ours, built on
    # X's words "spending limit" and "billing cycle".
    "SpendingLimit": {
        "title": "Payment Required",
        "detail": "Your spending limit for this billing cycle has been reached.",
        "type": "https://api.x.com/2/problems/spending-limit",
    },
}
# The `api-version` header X sends with every answer (OpenAPI 2.168: xdevplatform/docs
# openapi.json `info.version`); the api_version knob changes it, None leaves it out.
API_VERSION = "2.168"
RULE_MAX_LENGTH = 1024  # X's rule length on pay-per-use (2048 on Enterprise: knob access_level)
WORDS = tuple(
    [
        "python",
        "data",
        "stream",
        "collector",
        "snake",
        "spool",
        "rotate",
        "gzip",
        "bucket",
        "cloud",
        "lambda",
        "query",
        "athena",
        "spark",
        "trino",
        "duckdb",
        "parquet",
        "tweet",
        "post",
        "reply",
        "quote",
        "hello",
        "world",
        "today",
        "news",
    ]
)


# Extension points (see the module docstring) -------------------------------------------------

RouteHandler = Callable[["_Handler", dict[str, str]], None]
# (method, compiled path pattern) -> handler; the pattern's {name} parts become params
ROUTES: list[tuple[str, re.Pattern[str], RouteHandler]] = []
# name -> its handlers: several families may follow one knob (access_level: the connection
# limit and rule length in x_api_connections, backfill/Recovery in x_api_recovery)
KNOBS: dict[str, list[Callable[[FakeXServer, Any], None]]] = {}
STATS_PARTS: list[Callable[[FakeXServer], dict]] = []
# fn(fake, handler) -> (status, problem) to refuse a stream connection, or None
STREAM_GATES: list[Callable[[FakeXServer, Any], tuple[int, dict] | None]] = []


def route(method: str, path: str) -> Callable[[RouteHandler], RouteHandler]:
    """Register `handler(handler, params)` for `method` on `path` ("/2/x/{id}" binds "id")."""
    pattern = re.compile("^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")

    def register(handler: RouteHandler) -> RouteHandler:
        ROUTES.append((method, pattern, handler))
        return handler

    return register


def knob(name: str) -> Callable[[Callable[[FakeXServer, Any], None]], Callable]:
    """Register a /_fake/control key (and FakeXServer.control) handled by `fn(fake, value)`;
    several modules may follow the same key: each of their handlers runs."""

    def register(fn: Callable[[FakeXServer, Any], None]) -> Callable:
        KNOBS.setdefault(name, []).append(fn)
        return fn

    return register


def stream_gate(fn: Callable[[FakeXServer, Any], tuple[int, dict] | None]) -> Callable:
    """Register `fn(fake, handler)`, asked before a stream connection is accepted: a
    (status, problem) answer refuses it (the connection limit, tests/fakes/x_api_connections.py)."""
    STREAM_GATES.append(fn)
    return fn


# fn(fake, query, selection) -> (lines, close_after) or None: stream lines sent before the live
# posts of an accepted connection (backfill_minutes), or instead of them (Recovery).
STREAM_REPLAYS: list[Callable[..., tuple[list[tuple[str, bytes]], bool] | None]] = []


def stream_replay(fn: Callable[..., tuple[list[tuple[str, bytes]], bool] | None]) -> Callable:
    """Register `fn(fake, query, selection)`: (id, line) pairs an accepted stream connection
    sends first, and whether it then ends (a Recovery job) instead of streaming live posts
    (tests/fakes/x_api_recovery.py)."""
    STREAM_REPLAYS.append(fn)
    return fn


def stats_part(fn: Callable[[FakeXServer], dict]) -> Callable[[FakeXServer], dict]:
    """Register `fn(fake) -> dict`, merged into FakeXServer.stats() (/_fake/stats)."""
    STATS_PARTS.append(fn)
    return fn


def _now_iso() -> str:
    return _iso(datetime.now(UTC))


def _iso(when: datetime) -> str:
    """X's timestamp format: 2026-11-30T00:37:01.815Z."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def next_snowflake(last: int, sequence: int) -> int:
    """A post id for now: X's snowflake layout, greater than `last`; `sequence` fills the low
    12 bits (it picks the post's template, so consecutive posts differ)."""
    now_ms = time.time_ns() // 1_000_000 - SNOWFLAKE_EPOCH_MS
    return max((now_ms << 22) | (sequence & 0xFFF), last + 1)


def created_at_of(post_id: int) -> bytes:
    """The `created_at` a snowflake id holds, in X's format."""
    return _created_at_ms((post_id >> 22) + SNOWFLAKE_EPOCH_MS)


def editable_until_of(post_id: int) -> bytes:
    """`edit_controls.editable_until` of a post: an hour after the time its id holds."""
    return _created_at_ms((post_id >> 22) + SNOWFLAKE_EPOCH_MS + EDIT_WINDOW_MS)


@functools.lru_cache(maxsize=4096)
def _created_at_ms(millis: int) -> bytes:
    seconds, ms = divmod(millis, 1000)
    return _iso(datetime.fromtimestamp(seconds, UTC).replace(microsecond=ms * 1000)).encode()


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sample_messages(samples: Path, pool: int, seed: int) -> list[dict]:
    """Post messages of 1-8 KB holding every field X can send about them, before the request's
    fields are applied (`project_message`); `data.id` and `conversation_id` are ID_MARK.

    Per post the id is joined in, `data.created_at` becomes the time the id holds, the time the
    post is sent (X's `created_at` is the post's creation time, seconds before a stream delivers
    it) and `"matching_rules": [...]}` is appended (`FakeXServer.post_body`). A test may give a
    message a fixed `created_at` in place of CREATED_AT_MARK (before the first stream).
    """
    rng = random.Random(seed)
    messages = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    authors = _author_pool(messages, rng)
    # A few accounts post most of a topic's posts: weights 1, 1/2, 1/3...
    weights = [1 / (rank + 1) for rank in range(len(authors))]
    built = []
    for _ in range(pool):
        msg = copy.deepcopy(rng.choice(messages))
        msg.pop("matching_rules", None)
        data = msg["data"]
        data["text"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))
        data["created_at"] = CREATED_AT_MARK.decode()  # the send time, set per post
        author = rng.choices(authors, weights)[0]
        _set_author(msg, author)
        if rng.random() < REPOST_SHARE:
            _make_repost(msg, rng.choice(authors), rng)
        _add_media_details(msg, rng)
        if rng.random() < POLL_SHARE and "referenced_tweets" not in data:
            _add_poll(msg, rng)
        _fit_size(msg, rng.randint(1024, 8 * 1024 - 200), rng)
        data["id"] = data["conversation_id"] = ID_MARK.decode()
        data["edit_history_tweet_ids"] = [ID_MARK.decode()]
        if rng.random() < EDITED_SHARE:  # the version it replaced comes first
            data["edit_history_tweet_ids"].insert(0, str(rng.randint(10**18, 19 * 10**17)))
        data["edit_controls"] = {
            "edits_remaining": 6 - len(data["edit_history_tweet_ids"]),
            "is_edit_eligible": "referenced_tweets" not in data,
            "editable_until": EDITABLE_UNTIL_MARK.decode(),
        }
        for tweet in msg["includes"].get("tweets", []):
            tweet.setdefault("edit_history_tweet_ids", [tweet["id"]])
        built.append(msg)
    return built


def note_messages(messages: list[dict], count: int, seed: int) -> list[dict]:
    """Long posts (X Premium): NOTE_CHARS characters of text with hashtags, mentions and URLs.

    As X sends them: `text` is cut near NOTE_CUT characters with the entities of that cut,
    `note_tweet` holds the full text and its entities (asked for with tweet.fields=note_tweet).
    https://docs.x.com/x-api/fundamentals/data-dictionary (note_tweet)
    """
    rng = random.Random(seed + 1)
    originals = [m for m in messages if "referenced_tweets" not in m["data"]] or messages
    notes = []
    for number in range(count):
        msg = copy.deepcopy(originals[number % len(originals)])
        users = msg["includes"]["users"]
        full, entities = _note_text(number, users, rng)
        cut = full.rfind(" ", 0, NOTE_CUT)
        data = msg["data"]
        data["text"] = full[:cut]
        data["entities"] = {
            kind: [e for e in found if e["end"] <= cut] for kind, found in entities.items()
        }
        data["note_tweet"] = {"text": full, "entities": entities}
        notes.append(msg)
    return notes


def _note_text(number: int, users: list[dict], rng: random.Random) -> tuple[str, dict]:
    """A text of exactly NOTE_CHARS characters and its entities (offsets in characters)."""
    words: list[str] = []
    entities: dict[str, list[dict]] = {"hashtags": [], "mentions": [], "urls": []}
    length = 0
    while True:
        roll = rng.random()
        if roll < 0.06:
            word = f"#{rng.choice(WORDS).title()}{number}x{len(entities['hashtags'])}"
        elif roll < 0.08:
            word = f"@{rng.choice(users)['username']}"
        elif roll < 0.09:
            word = f"https://t.co/{rng.randint(10**9, 10**10):x}"
        else:
            word = rng.choice(WORDS)
        start = length + (1 if words else 0)
        if start + len(word) > NOTE_CHARS - 2:
            break
        end = start + len(word)
        if word.startswith("#"):
            entities["hashtags"].append({"start": start, "end": end, "tag": word[1:]})
        elif word.startswith("@"):
            user = next(u for u in users if u["username"] == word[1:])
            mention = {"start": start, "end": end, "username": user["username"], "id": user["id"]}
            entities["mentions"].append(mention)
        elif word.startswith("https://"):
            expanded = f"https://example.org/{rng.choice(WORDS)}/{len(entities['urls'])}"
            url = {"start": start, "end": end, "url": word, "expanded_url": expanded}
            entities["urls"].append({**url, "display_url": expanded[8:]})
        words.append(word)
        length = end
    text = " ".join(words)
    text += " " + "x" * (NOTE_CHARS - len(text) - 1)
    return text, entities


def split_message(message: dict, selection: FieldSelection, renamed: bool) -> tuple[bytes, ...]:
    """The message rendered for `selection`, without its closing brace, split at ID_MARK."""
    body = _dumps(project_message(message, selection, renamed))[:-1]
    return tuple(body.split(ID_MARK))


def _author_pool(messages: list[dict], rng: random.Random) -> list[dict]:
    """AUTHORS user objects shaped like the samples' `includes.users`, with fresh ids/names."""
    profiles = [u for m in messages for u in m.get("includes", {}).get("users", [])]
    authors = []
    for number in range(AUTHORS):
        user = copy.deepcopy(rng.choice(profiles))
        user["id"] = str(rng.randint(10**9, 10**10))
        user["username"] = f"{rng.choice(WORDS)}_{number:02d}"
        user["name"] = user["username"].replace("_", " ").title()
        authors.append(user)
    return authors


def _set_author(msg: dict, author: dict) -> None:
    """data.author_id and its user object first in includes.users, as X's author_id expansion.

    The sample's other users (mentioned or quoted accounts) stay after it.
    https://developer.x.com/en/docs/x-api/expansions
    """
    data, includes = msg["data"], msg.setdefault("includes", {})
    old_author = data.get("author_id")
    others = [u for u in includes.get("users", []) if u.get("id") != old_author]
    data["author_id"] = author["id"]
    includes["users"] = [author, *others]


def _make_repost(msg: dict, original_author: dict, rng: random.Random) -> None:
    """A repost as X sends it: `RT @user: ` text, referenced_tweets type "retweeted"."""
    data = msg["data"]
    original_id = str(rng.randint(10**18, 2 * 10**18))
    data["text"] = f"RT @{original_author['username']}: {data['text']}"
    data["referenced_tweets"] = [{"type": "retweeted", "id": original_id}]
    mention = {"start": 3, "end": 4 + len(original_author["username"]),
               "username": original_author["username"], "id": original_author["id"]}  # fmt: skip
    data.setdefault("entities", {})["mentions"] = [mention]
    includes = msg["includes"]
    if all(u["id"] != original_author["id"] for u in includes["users"]):
        includes["users"].append(original_author)
    original = {"id": original_id, "author_id": original_author["id"], "text": data["text"][3:]}
    includes["tweets"] = [original]


def _add_media_details(msg: dict, rng: random.Random) -> None:
    """Alt text on half of the photos, as people write it (media.fields=alt_text)."""
    for media in msg.get("includes", {}).get("media", []):
        if rng.random() < 0.5:
            media["alt_text"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def _add_poll(msg: dict, rng: random.Random) -> None:
    """A poll of 2-4 options (attachments.poll_ids, includes.polls)."""
    poll_id = str(rng.randint(10**18, 2 * 10**18))
    msg["data"].setdefault("attachments", {})["poll_ids"] = [poll_id]
    options = [
        {"position": n + 1, "label": rng.choice(WORDS), "votes": rng.randint(0, 500)}
        for n in range(rng.randint(2, 4))
    ]
    poll = {"id": poll_id, "options": options, "voting_status": "closed",
            "duration_minutes": 1440, "end_datetime": "2026-11-01T12:00:00.000Z"}  # fmt: skip
    msg.setdefault("includes", {}).setdefault("polls", []).append(poll)


def _fit_size(msg: dict, target: int, rng: random.Random) -> None:
    """Grow or shrink a message towards `target` bytes by editing its optional parts."""
    data = msg["data"]
    includes = msg.setdefault("includes", {})
    for key in ("tweets", "media", "places"):
        if len(_dumps(msg)) <= target:
            break
        includes.pop(key, None)
    annotations = data.get("context_annotations", [])
    while len(_dumps(msg)) > target and annotations:
        annotations.pop()
    if len(_dumps(msg)) > target:
        data.pop("entities", None)
    filler = {"domain": {"id": "66", "name": "Interests and Hobbies Category"}}
    while len(_dumps(msg)) < target - 120:
        entity = {"id": str(rng.randint(10**17, 10**18)), "name": rng.choice(WORDS).title()}
        data.setdefault("context_annotations", []).append({**filler, "entity": entity})


@dataclass(frozen=True)
class MissedPost:
    """A post on the timeline: made while no stream connection was open (missed) or taken by
    a stream (FakeXServer.timeline_posts)."""

    id: int
    at: float  # epoch seconds: the time its snowflake holds
    rules: tuple[str, ...]  # the values of the rules live then (every post matches them all)
    repost: bool  # rendered as a repost ("RT @user: ", referenced_tweets "retweeted")


MISSED_MAX = 200_000  # posts the timeline keeps; older ones are forgotten
STREAMED_MAX = 200_000  # batches of streamed posts the timeline keeps


# Fields and expansions ------------------------------------------------------------------------
# What X accepts on the stream (OpenAPI 2.16x, GET /2/tweets/search/stream): a name outside
# these sets is a 400 invalid-request. https://docs.x.com/x-api/fundamentals/fields,
# https://docs.x.com/x-api/fundamentals/expansions
X_TWEET_FIELDS = frozenset(
    [
        "article",
        "attachments",
        "author_id",
        "card_uri",
        "community_id",
        "context_annotations",
        "conversation_id",
        "created_at",
        "display_text_range",
        "edit_controls",
        "edit_history_tweet_ids",
        "entities",
        "geo",
        "id",
        "in_reply_to_user_id",
        "lang",
        "media_metadata",
        "non_public_metrics",
        "note_tweet",
        "organic_metrics",
        "possibly_sensitive",
        "promoted_metrics",
        "public_metrics",
        "referenced_tweets",
        "reply_settings",
        "scopes",
        "source",
        "text",
        "withheld",
    ]
)
X_EXPANSIONS = frozenset(
    [
        "article.cover_media",
        "article.media_entities",
        "attachments.media_keys",
        "attachments.media_source_tweet",
        "attachments.poll_ids",
        "author_id",
        "edit_history_tweet_ids",
        "entities.mentions.username",
        "entities.note.mentions.username",
        "geo.place_id",
        "in_reply_to_user_id",
        "referenced_tweets.id",
        "referenced_tweets.id.author_id",
    ]
)
X_USER_FIELDS = frozenset(
    [
        "affiliation",
        "connection_status",
        "created_at",
        "description",
        "entities",
        "id",
        "location",
        "most_recent_tweet_id",
        "name",
        "pinned_tweet_id",
        "profile_banner_url",
        "profile_image_url",
        "protected",
        "public_metrics",
        "receives_your_dm",
        "subscription_type",
        "url",
        "username",
        "verified",
        "verified_type",
        "withheld",
    ]
)
X_MEDIA_FIELDS = frozenset(
    [
        "alt_text",
        "duration_ms",
        "height",
        "media_key",
        "non_public_metrics",
        "organic_metrics",
        "preview_image_url",
        "promoted_metrics",
        "public_metrics",
        "type",
        "url",
        "variants",
        "width",
    ]
)
X_POLL_FIELDS = frozenset(["duration_minutes", "end_datetime", "id", "options", "voting_status"])
X_PLACE_FIELDS = frozenset(
    ["contained_within", "country", "country_code", "full_name", "geo", "id", "name", "place_type"]
)
# Sent whatever the request names (X's default fields of each object).
DEFAULT_TWEET = ("id", "text", "edit_history_tweet_ids")
DEFAULT_USER = ("id", "name", "username")
DEFAULT_MEDIA = ("media_key", "type")
DEFAULT_POLL = ("id", "options")
DEFAULT_PLACE = ("id", "full_name")
# OpenAPI 2.167's spellings of renamed post fields (live answers still use the old ones).
RENAMED_FIELDS = {
    "edit_history_tweet_ids": "edit_history_post_ids",
    "note_tweet": "note_post",
    "referenced_tweets": "referenced_posts",
}
_OLD_SPELLING = {new: old for old, new in RENAMED_FIELDS.items()}
# An expansion puts the id field it expands into the post ("The ID that represents the
# expanded data object will be included directly in the Tweet data object").
_EXPANSION_FIELDS = {
    "author_id": "author_id",
    "in_reply_to_user_id": "in_reply_to_user_id",
    "referenced_tweets.id": "referenced_tweets",
    "attachments.media_keys": "attachments",
    "attachments.poll_ids": "attachments",
    "geo.place_id": "geo",
    "edit_history_tweet_ids": "edit_history_tweet_ids",
}
_FIELD_PARAMS = (
    ("tweet.fields", X_TWEET_FIELDS),
    ("expansions", X_EXPANSIONS),
    ("user.fields", X_USER_FIELDS),
    ("media.fields", X_MEDIA_FIELDS),
    ("poll.fields", X_POLL_FIELDS),
    ("place.fields", X_PLACE_FIELDS),
)


class InvalidFields(ValueError):
    """A field or expansion name X does not know: `body` is X's 400 answer."""

    def __init__(self, body: dict) -> None:
        super().__init__(body["errors"][0]["message"])
        self.body = body


@dataclass(frozen=True)
class FieldSelection:
    """What a request asked X for: the names of each `*.fields` parameter and `expansions`
    (old or renamed spellings both accepted, kept in the old one)."""

    tweet: frozenset[str] = frozenset()
    expansions: frozenset[str] = frozenset()
    user: frozenset[str] = frozenset()
    media: frozenset[str] = frozenset()
    poll: frozenset[str] = frozenset()
    place: frozenset[str] = frozenset()

    @classmethod
    def from_query(cls, query: Mapping[str, Any] | None) -> FieldSelection:
        """From a parsed query ({"tweet.fields": ["a,b"]} as parse_qs gives, or plain strings).

        Raises InvalidFields with X's 400 body for a name X does not accept."""
        chosen = []
        for param, accepted in _FIELD_PARAMS:
            raw = (query or {}).get(param) or []
            values = [raw] if isinstance(raw, str) else list(raw)
            names = {_OLD_SPELLING.get(n, n) for v in values for n in v.split(",") if n}
            unknown = sorted(names - accepted)
            if unknown:
                raise InvalidFields(_invalid_field(param, unknown, accepted))
            chosen.append(frozenset(names))
        return cls(*chosen)


def _invalid_field(param: str, unknown: list[str], accepted: frozenset[str]) -> dict:
    """X's answer to an unknown field name (the shape of the 400s quoted in tweepy issues)."""
    value, known = ",".join(unknown), ",".join(sorted(accepted))
    body = _invalid_request(
        f"The `{param}` query parameter value [{value}] is not one of [{known}]"
    )
    body["errors"][0]["parameters"] = {param: [value]}
    return body


def project_message(message: dict, selection: FieldSelection, renamed: bool = False) -> dict:
    """The message as X sends it for `selection`: the post with its default fields, the fields
    asked for and the ids its expansions need; `includes` with the expanded objects, each with
    its default fields and those asked for; with `renamed`, OpenAPI 2.167's spellings."""
    data, includes = message["data"], message.get("includes", {})
    expansions = selection.expansions
    post_fields = set(DEFAULT_TWEET) | selection.tweet
    post_fields |= {_EXPANSION_FIELDS[e] for e in expansions if e in _EXPANSION_FIELDS}
    out = {"data": _project_post(data, post_fields, renamed)}
    tweets_by_id = {t["id"]: t for t in includes.get("tweets", [])}
    included_tweets = []
    errors: list[dict] = []  # X's partial errors: an expanded object it cannot return
    if "referenced_tweets.id" in expansions:
        for ref in data.get("referenced_tweets", []):
            if ref["id"] in tweets_by_id:
                included_tweets.append(tweets_by_id[ref["id"]])
            else:
                errors.append(not_found("tweet", "referenced_tweets.id", ref["id"]))
    user_ids = _expanded_user_ids(data, included_tweets, expansions, includes)
    users_by_id = {u["id"]: u for u in includes.get("users", [])}
    wanted_users = set(DEFAULT_USER) | selection.user
    users = [_pick(users_by_id[i], wanted_users) for i in user_ids if i in users_by_id]
    errors += [
        not_found("user", parameter, value)
        for parameter, value in _missing_users(data, included_tweets, expansions, includes)
    ]
    new_includes: dict[str, list] = {}
    if users:
        new_includes["users"] = users
    tweet_fields = set(DEFAULT_TWEET) | selection.tweet
    if "referenced_tweets.id.author_id" in expansions:
        tweet_fields.add("author_id")
    if included_tweets:
        new_includes["tweets"] = [_project_post(t, tweet_fields, renamed) for t in included_tweets]
    attachments = data.get("attachments", {})
    for expansion, key, id_key, ids, defaults, asked in (
        ("attachments.media_keys", "media", "media_key", attachments.get("media_keys", []),
         DEFAULT_MEDIA, selection.media),
        ("attachments.poll_ids", "polls", "id", attachments.get("poll_ids", []),
         DEFAULT_POLL, selection.poll),
        ("geo.place_id", "places", "id", [data.get("geo", {}).get("place_id")],
         DEFAULT_PLACE, selection.place),
    ):  # fmt: skip
        if expansion not in expansions:
            continue
        by_id = {o[id_key]: o for o in includes.get(key, [])}
        found = [_pick(by_id[i], set(defaults) | asked) for i in ids if i in by_id]
        if found:
            new_includes[key] = found
        resource = {"media": "media", "polls": "poll", "places": "place"}[key]
        errors += [not_found(resource, expansion, i) for i in ids if i and i not in by_id]
    if new_includes:
        out["includes"] = new_includes
    if errors:
        out["errors"] = errors
    return out


def not_found(resource_type: str, parameter: str, value: str) -> dict:
    """X's partial error for an expanded object it cannot return (deleted, withheld, gone):
    the post comes with `errors` beside `data` and `includes`, the object is left out of
    `includes` (the shape of PARTIAL_ERROR, X's resource-not-found problem)."""
    return {
        "value": value,
        "detail": f"Could not find {resource_type} with {parameter}: [{value}].",
        "title": "Not Found Error",
        "resource_type": resource_type,
        "parameter": parameter,
        "resource_id": value,
        "type": "https://api.twitter.com/2/problems/resource-not-found",
    }


def _missing_users(
    data: dict, included_tweets: list[dict], expansions: frozenset[str], includes: dict
) -> list[tuple[str, str]]:
    """(parameter, value) of each user an expansion names that `includes` cannot hold."""
    known_ids = {u["id"] for u in includes.get("users", [])}
    known_names = {u["username"].lower() for u in includes.get("users", [])}
    missing = []
    for expansion, value in (
        ("author_id", data.get("author_id")),
        ("in_reply_to_user_id", data.get("in_reply_to_user_id")),
        *(("referenced_tweets.id.author_id", t.get("author_id")) for t in included_tweets),
    ):
        if expansion in expansions and value and value not in known_ids:
            missing.append((expansion, value))
    for expansion, entities in (
        ("entities.mentions.username", data.get("entities", {})),
        ("entities.note.mentions.username", data.get("note_tweet", {}).get("entities", {})),
    ):
        if expansion in expansions:
            names = [m["username"] for m in entities.get("mentions", [])]
            missing += [(expansion, n) for n in names if n.lower() not in known_names]
    return list(dict.fromkeys(missing))


def _expanded_user_ids(
    data: dict, included_tweets: list[dict], expansions: frozenset[str], includes: dict
) -> list[str]:
    """The ids of the users the expansions ask for, the author first, each once."""
    by_name = {u["username"].lower(): u["id"] for u in includes.get("users", [])}
    ids: list[str] = []
    if "author_id" in expansions:
        ids.append(data.get("author_id"))
    if "in_reply_to_user_id" in expansions:
        ids.append(data.get("in_reply_to_user_id"))
    if "entities.mentions.username" in expansions:
        mentions = data.get("entities", {}).get("mentions", [])
        ids += [by_name.get(m["username"].lower()) for m in mentions]
    if "entities.note.mentions.username" in expansions:
        mentions = data.get("note_tweet", {}).get("entities", {}).get("mentions", [])
        ids += [by_name.get(m["username"].lower()) for m in mentions]
    if "referenced_tweets.id.author_id" in expansions:
        ids += [t.get("author_id") for t in included_tweets]
    return [i for i in dict.fromkeys(ids) if i]


def _project_post(post: dict, fields: set[str], renamed: bool) -> dict:
    if not renamed:
        return {key: value for key, value in post.items() if key in fields}
    return {RENAMED_FIELDS.get(k, k): value for k, value in post.items() if k in fields}


def _pick(obj: dict, fields: set[str]) -> dict:
    return {key: value for key, value in obj.items() if key in fields}


def is_note(post_id: int, permille: int) -> bool:
    """Whether the post with this id is a long post when `permille` of posts are (a hash of
    the id, so ids of any spacing get the share)."""
    return (post_id * 0x9E3779B97F4A7C15 >> 24) % 1000 < permille


class _Rendered:
    """The messages split for one field set: `body(post_id)` joins one in (cheap: the stream
    renders every post through it, as fast as the client reads)."""

    def __init__(self, parts: list[tuple], note_parts: list[tuple], note_share: float) -> None:
        self.parts = parts
        self.note_parts = note_parts
        self.note_permille = round(note_share * 1000)
        self.edit_controls = any(EDITABLE_UNTIL_MARK in b"".join(p) for p in parts + note_parts)

    def body(self, post_id: int) -> bytes:
        if self.note_permille and is_note(post_id, self.note_permille):
            parts = self.note_parts[post_id % len(self.note_parts)]
        else:
            parts = self.parts[post_id % len(self.parts)]
        body = str(post_id).encode().join(parts).replace(CREATED_AT_MARK, created_at_of(post_id))
        if self.edit_controls:
            body = body.replace(EDITABLE_UNTIL_MARK, editable_until_of(post_id))
        return body


class FakeXServer:
    """The X API v2 stand-in: filtered/sample stream, rules API, bearer check, fault knobs."""

    def __init__(
        self,
        token: str = "t0ken",
        port: int = 0,
        host: str = "127.0.0.1",
        rate: float = 0.0,
        count: int | None = None,
        keepalive_interval: float = 2.0,
        seed: int = 1,
        pool: int = 128,
        samples: Path = SAMPLES,
    ) -> None:
        self.token = token
        self.rate = rate
        self.count = count
        self.keepalive_interval = keepalive_interval
        self.close_after_count = False  # end the stream cleanly once `count` posts went out
        self.rule_max_length = RULE_MAX_LENGTH
        self.disconnect_every_connection = False
        # X's `api-version` response header, on every answer (2.164-2.168 seen in 2026)
        self.api_version: str | None = API_VERSION
        self.stream_refusal: tuple[int, dict] | None = None
        self.sent_ids: list[str] = []
        self.connections = 0  # stream connection attempts, failed ones included
        self.connection_times: list[float] = []  # time.monotonic() of each of those attempts
        # the query of each of those attempts: {"tweet.fields": ["created_at,lang"], ...}
        self.stream_queries: list[dict[str, list[str]]] = []
        self.streams_open = 0  # 200 answers still being written (a dead client's until noticed)
        self.last_keepalive_at: float | None = None  # time.time() of the last keep-alive written
        self.first_byte_at: float | None = None
        self.last_post_at: float | None = None
        self.bytes_sent = 0
        self.rules: dict[str, dict[str, str]] = {}
        self.clock: Callable[[], float] = time.time  # the bill's UTC day comes from it
        self.billed: dict[str, set[str]] = {}  # UTC day -> ids delivered that day (the bill)
        self.ext: dict[str, Any] = {}  # per-server state of the x_api_* modules, by family
        # the open stream connections, by id: {"id", "endpoint_name", "connected_at",
        # "client_ip", "kill" (a threading.Event that ends it, as X's Connections API does)}
        self.stream_connections: dict[str, dict[str, Any]] = {}
        self.missed: list[MissedPost] = []  # the timeline (oldest first): see missed_posts
        # what the streams took, oldest first: (first id, count, rule values live then)
        self.streamed: collections.deque[tuple[int, int, tuple[str, ...]]] = collections.deque(
            maxlen=STREAMED_MAX
        )
        self._down_since: float | None = None  # time.time() no stream was open from
        self._timeline_started = False
        self._lock = threading.RLock()  # a replay hook reads the timeline while a stream opens
        # every field X can send about each post; what a request gets is rendered from these
        self.messages = sample_messages(samples, pool, seed)
        self.notes = note_messages(self.messages, NOTE_TEMPLATES, seed)
        self.note_share = 0.0  # share of posts that are long posts (note_tweet)
        self.renamed_fields = False  # answer with OpenAPI 2.167's spellings (RENAMED_FIELDS)
        self._rendered: dict[tuple, _Rendered] = {}  # per field set: the split messages
        self._reposts = [
            any(r["type"] == "retweeted" for r in m["data"].get("referenced_tweets", []))
            for m in self.messages
        ]
        self._last_id = 0
        self._rule_ids = itertools.count(1_900_000_000_000_000_000)
        self._posts_taken = 0
        self._matching_rules = b""
        self._update_matching_rules()
        self._drop_after: int | None = None
        self._fail_next: list[int] = []
        self._stall_until = 0.0
        self._stall_ends: float | None = None  # time.time() a stall ends (the timeline)
        self._disconnect = threading.Event()
        self._injections: list[bytes] = []
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> FakeXServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:  # the timeline ends with the server
            self._catch_up(time.time())
            self._down_since = None
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeXServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Fault knobs -------------------------------------------------------------------------

    def drop_after(self, posts: int) -> None:
        with self._lock:
            self._drop_after = posts

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._fail_next.extend([status] * times)

    def stall(self, seconds: float) -> None:
        now = time.time()
        with self._lock:
            self._catch_up(now)
            if self._timeline_started and self._down_since is None:
                self._down_since = now  # nothing is delivered: posts are missed from now
            self._stall_ends = now + seconds
        self._stall_until = time.monotonic() + seconds

    def operational_disconnect(self) -> None:
        self._disconnect.set()

    def refuse_streams(self, status: int | None, problem: str | None = None) -> None:
        """Answer every stream connection with `status` and X's problem of that title (or
        PROBLEMS[status]) until called with None."""
        if status is None:
            self.stream_refusal = None
            return
        body = NAMED_PROBLEMS[problem] if problem else PROBLEMS.get(status, {"status": status})
        self.stream_refusal = (status, body)

    def add_rule(self, value: str, tag: str | None = None) -> str:
        """Make a rule live as if a client had POSTed it; returns its id."""
        with self._lock:
            rule = {"id": str(next(self._rule_ids)), "value": value}
            if tag is not None:
                rule["tag"] = tag
            self.rules[rule["id"]] = rule
            self._update_matching_rules()
        return rule["id"]

    def inject(self, kind: str) -> None:
        line = self._special_line(kind)
        with self._lock:
            self._injections.append(line)

    def missed_posts(
        self, start: float | None = None, end: float | None = None
    ) -> list[MissedPost]:
        """Posts made while no stream connection was open, with start <= at < end (epoch s)."""
        with self._lock:
            self._catch_up(time.time())
            return [
                post
                for post in self.missed
                if (start is None or post.at >= start) and (end is None or post.at < end)
            ]

    def timeline_posts(
        self, start: float | None = None, end: float | None = None
    ) -> list[MissedPost]:
        """Every post X made with start <= at < end (epoch s), streamed or missed, oldest
        first: what X's search finds, whether or not a stream delivered it."""
        with self._lock:
            self._catch_up(time.time())
            batches = list(self.streamed)
            missed = list(self.missed)
        low = -1 if start is None else ((int(start * 1000) - SNOWFLAKE_EPOCH_MS) << 22)
        high = None if end is None else ((math.ceil(end * 1000) - SNOWFLAKE_EPOCH_MS) << 22)
        posts = [
            post
            for post in missed
            if (start is None or post.at >= start) and (end is None or post.at < end)
        ]
        for first, count, rules in batches:
            if first + count - 1 < low or (high is not None and first >= high):
                continue
            for post_id in range(first, first + count):
                at = ((post_id >> 22) + SNOWFLAKE_EPOCH_MS) / 1000
                if (start is None or at >= start) and (end is None or at < end):
                    posts.append(MissedPost(post_id, at, rules, self.is_repost(post_id)))
        posts.sort(key=lambda post: post.id)
        return posts

    def is_repost(self, post_id: int) -> bool:
        if self.note_share and is_note(post_id, round(self.note_share * 1000)):
            return False  # long posts are originals
        return self._reposts[post_id % len(self.messages)]

    def _stream_opened(self) -> float | None:
        """Under the lock: a 200 answer starts; the timeline stops making missed posts.
        Returns when the timeline was missing posts from (None: it was not), to undo it."""
        self._catch_up(time.time())
        self.streams_open += 1
        down_since = self._down_since
        if self._stall_ends is None:  # a stream opened in a stall delivers nothing either
            self._down_since = None
        return down_since

    def _stream_closed(self) -> None:
        """Under the lock: a 200 answer ended; with none left open, posts are missed again."""
        self.streams_open -= 1
        if self.streams_open == 0 and self._down_since is None:
            self._down_since = time.time()

    def _stream_attempted(self) -> None:
        """Under the lock: the first connection attempt starts the timeline."""
        if not self._timeline_started:
            self._timeline_started = True
            if self.streams_open == 0:
                self._down_since = time.time()

    def _catch_up(self, now: float) -> None:
        """Under the lock: make the posts X matched from _down_since to `now` (to the end of a
        stall when a stream is open after it), at `rate`."""
        ends = self._stall_ends
        if ends is not None and now >= ends:
            self._stall_ends = None
            if self.streams_open:  # the stall is over: posts reach the open stream again
                self._make_missed(ends)
                self._down_since = None
                return
        self._make_missed(now)

    def _make_missed(self, now: float) -> None:
        """Under the lock: _catch_up's posts from _down_since to `now`."""
        since = self._down_since
        if since is None or self.rate <= 0 or not self.rules:
            if since is not None:
                self._down_since = now
            return
        step = 1.0 / self.rate
        rules = tuple(r["value"] for r in self.rules.values())
        at = since + step
        while at < now:
            millis = int(at * 1000) - SNOWFLAKE_EPOCH_MS
            sequence = len(self.missed) + self._posts_taken
            post_id = (millis << 22) | (sequence & 0xFFF)
            self.missed.append(MissedPost(post_id, at, rules, self.is_repost(post_id)))
            at += step
        del self.missed[:-MISSED_MAX]
        self._down_since = at - step

    def record_delivered(self, ids: list[str]) -> None:
        """Bill `ids` as delivered now: X bills a post once per UTC day, whatever the endpoint."""
        day = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")
        with self._lock:
            self.billed.setdefault(day, set()).update(ids)

    def billed_posts(self, day: str | None = None) -> int:
        """Posts billed on the UTC day `day` ("YYYY-MM-DD"), or over every day."""
        with self._lock:
            if day is not None:
                return len(self.billed.get(day, ()))
            return sum(len(ids) for ids in self.billed.values())

    def stats(self) -> dict:
        return {
            **{key: value for part in STATS_PARTS for key, value in part(self).items()},
            "billed": {day: len(ids) for day, ids in self.billed.items()},
            "sent": len(self.sent_ids),
            "missed": len(self.missed_posts()),  # made while no stream was open
            "bytes_sent": self.bytes_sent,
            "connections": self.connections,
            "first_byte_at": self.first_byte_at,
            "last_post_at": self.last_post_at,
            "last_id": self.sent_ids[-1] if self.sent_ids else None,
            "rules": list(self.rules.values()),
        }

    def control(self, settings: dict) -> None:
        """Apply knobs given as JSON (the /_fake/control endpoint)."""
        for key in (
            "rate",
            "count",
            "keepalive_interval",
            "close_after_count",
            "rule_max_length",
            "disconnect_every_connection",
            "api_version",
            "note_share",
            "renamed_fields",
        ):
            if key in settings:
                setattr(self, key, settings[key])
        if "drop_after" in settings:
            self.drop_after(int(settings["drop_after"]))
        if "fail_next" in settings:
            self.fail_next(*settings["fail_next"])
        if "stall" in settings:
            self.stall(float(settings["stall"]))
        if settings.get("operational_disconnect"):
            self.operational_disconnect()
        if "inject" in settings:
            self.inject(settings["inject"])
        if "refuse_streams" in settings:
            self.refuse_streams(*(settings["refuse_streams"] or [None]))
        for key, value in settings.items():
            for handler in KNOBS.get(key, ()):
                handler(self, value)

    # Posts -------------------------------------------------------------------------------

    def _update_matching_rules(self) -> None:
        rules = [{"id": rid, "tag": r.get("tag", "")} for rid, r in self.rules.items()]
        rules = rules or [{"id": "1", "tag": ""}]
        self._rule_values = tuple(r["value"] for r in self.rules.values())
        self._matching_rules = b',"matching_rules":' + _dumps(rules) + b"}\r\n"

    def _take_posts(
        self, wanted: int, selection: FieldSelection | None = None
    ) -> list[tuple[str, bytes]]:
        """Render up to `wanted` posts for `selection` (None: the last stream request's),
        honouring `count`; returns (id, line) pairs."""
        rendered = self._rendered_for(selection)
        with self._lock:
            if self.count is not None:
                wanted = min(wanted, self.count - self._posts_taken)
            if wanted <= 0:
                return []
            first = self._next_id(self._posts_taken, wanted)
            self._posts_taken += wanted
            self.streamed.append((first, wanted, self._rule_values))
        tail = self._matching_rules
        return [(str(i), rendered.body(i) + tail) for i in range(first, first + wanted)]

    def _next_id(self, sequence: int, count: int = 1) -> int:
        """The first of `count` consecutive new ids (under the lock)."""
        first = next_snowflake(self._last_id, sequence)
        self._last_id = first + count - 1
        return first

    def post_body(
        self, post_id: int, query: Mapping[str, Any] | FieldSelection | None = None
    ) -> bytes:
        """The post with this id as the stand-in renders it for `query` (a parsed query string
        or a FieldSelection; None: the last stream request's), without `matching_rules` and the
        closing brace: its message (chosen by the id), the id and the `created_at` it holds."""
        return self._rendered_for(query).body(post_id)

    def render_post(self, post_id: int, query: Mapping[str, Any] | FieldSelection) -> bytes:
        """`{"data": {...}, "includes": {...}}` of the post with this id, as X answers a request
        with this query ({"tweet.fields": "a,b", "expansions": ...} or parse_qs's lists): only
        the fields and expansions asked for, in the spelling `renamed_fields` picks. For any
        endpoint that returns posts (search, lookup); raises InvalidFields with X's 400 body."""
        return self.post_body(post_id, query) + b"}"

    def _rendered_for(self, query: Mapping[str, Any] | FieldSelection | None) -> _Rendered:
        if query is None:
            query = self.stream_queries[-1] if self.stream_queries else {}
        selection = query if isinstance(query, FieldSelection) else FieldSelection.from_query(query)
        key = (selection, self.renamed_fields, self.note_share)
        rendered = self._rendered.get(key)
        if rendered is None:
            rendered = _Rendered(
                [split_message(m, selection, self.renamed_fields) for m in self.messages],
                [split_message(m, selection, self.renamed_fields) for m in self.notes],
                self.note_share,
            )
            self._rendered[key] = rendered
        return rendered

    def _special_line(self, kind: str) -> bytes:
        if kind == "malformed":
            return b'{"data":{"id":"123","text":"cut in the middle\r\n'
        if kind == "balanced_cut":  # cut where its braces happen to balance: not JSON
            return b'{"data":{"id":"125","text":"cut here }}\r\n'
        if kind == "lone_surrogate":  # a post whose text holds half a UTF-16 pair, as X sends
            with self._lock:
                post_id = self._next_id(self._posts_taken)
            line = self.post_body(post_id).replace(b'"text":"', b'"text":"\\ud83d ', 1)
            return line + self._matching_rules
        if kind == "control_chars":  # a post whose text holds NUL and BEL, escaped as X does
            with self._lock:
                post_id = self._next_id(self._posts_taken)
            line = self.post_body(post_id).replace(b'"text":"', b'"text":"a\\u0000b\\u0007 ', 1)
            return line + self._matching_rules
        if kind == "non_utf8":
            return b'{"data":{"id":"124","text":"\xff\xfe\xc3\x28"}}\r\n'
        if kind == "overflow_id":  # JSON and a data message, but no uint64 holds its id
            return b'{"data":{"id":"99999999999999999999999","text":"overflow"}}\r\n'
        if kind == "huge":
            with self._lock:
                post_id = str(self._next_id(self._posts_taken))
            text = "x" * HUGE_LINE_BYTES
            line = _dumps({"data": {"id": post_id, "text": text}})[:-1] + self._matching_rules
            return line
        if kind == "partial_errors":
            with self._lock:
                post_id = self._next_id(self._posts_taken)
            line = self.post_body(post_id)
            if b',"errors":[' in line:  # the post has partial errors of its own already
                return (
                    line.replace(b',"errors":[', b',"errors":[' + _dumps(PARTIAL_ERROR) + b",", 1)
                    + self._matching_rules
                )
            return line + b',"errors":' + _dumps([PARTIAL_ERROR]) + self._matching_rules
        if kind == "operational_disconnect":
            return _dumps(OPERATIONAL_DISCONNECT) + b"\r\n"
        raise ValueError(f"unknown injection kind {kind!r}")

    @staticmethod
    def _line_id(line: bytes) -> str | None:
        if line.startswith(b'{"data":{') and line.endswith(b"}\r\n"):
            try:
                return json.loads(line)["data"]["id"]
            except ValueError:
                return None
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tsunami"

    @property
    def fake(self) -> FakeXServer:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    # Plumbing ---------------------------------------------------------------------------

    @property
    def query(self) -> dict[str, list[str]]:
        """The request's query string, parsed (parse_qs)."""
        return parse_qs(urlsplit(self.path).query)

    def send_json(self, status: int, body: object, headers: dict | None = None) -> None:
        self._send_json(status, body, headers)

    def send_empty(self, status: int, headers: dict | None = None) -> None:
        """An answer without a body (X's empty 404 of an endpoint a project cannot use)."""
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self._send_api_version()
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def authorized(self) -> bool:
        """True for the right bearer token; otherwise answers X's 401 and returns False."""
        return self._authorized()

    def read_json(self) -> object:
        return self._read_json()

    def _extension(self, method: str) -> bool:
        """Answer from a registered route (x_api_* modules); False when none matches."""
        path = urlsplit(self.path).path
        for route_method, pattern, handler in ROUTES:
            match = pattern.match(path) if route_method == method else None
            if match:
                handler(self, match.groupdict())
                return True
        return False

    def _not_found(self) -> None:
        self._send_json(404, {"title": "Not Found Error", "type": "about:blank", "status": 404})

    def do_PUT(self) -> None:  # noqa: N802
        if not self._extension("PUT"):
            self._not_found()

    def do_DELETE(self) -> None:  # noqa: N802
        if not self._extension("DELETE"):
            self._not_found()

    def _send_json(self, status: int, body: object, headers: dict | None = None) -> None:
        payload = _dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self._send_api_version()
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_api_version(self) -> None:
        if self.fake.api_version:
            self.send_header("api-version", self.fake.api_version)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.fake.token}":
            return True
        self._send_json(401, PROBLEMS[401])
        return False

    def _read_json(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    # Routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        path = urlsplit(self.path).path
        if path == "/_fake/stats":
            self._send_json(200, self.fake.stats())
        elif path == "/_fake/sent_ids":
            self._send_json(200, self.fake.sent_ids)
        elif path in STREAM_PATHS:
            if self._authorized():
                self._stream()
        elif path == RULES_PATH:
            if self._authorized():
                self._get_rules()
        elif not self._extension("GET"):
            self._not_found()

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path == "/_fake/control":
            self.fake.control(self._read_json() or {})
            self._send_json(200, self.fake.stats())
        elif url.path == RULES_PATH:
            if self._authorized():
                dry_run = parse_qs(url.query).get("dry_run", ["false"])[0].lower() in ("true", "1")
                self._post_rules(self._read_json(), dry_run)
        elif not self._extension("POST"):
            self._not_found()

    # Rules ------------------------------------------------------------------------------

    def _get_rules(self) -> None:
        rules = list(self.fake.rules.values())
        meta: dict = {"sent": _now_iso(), "result_count": len(rules)}
        self._send_json(200, {"data": rules, "meta": meta} if rules else {"meta": meta})

    def _post_rules(self, body: object, dry_run: bool) -> None:
        if isinstance(body, dict) and isinstance(body.get("add"), list):
            self._add_rules(body["add"], dry_run)
        elif isinstance(body, dict) and isinstance(body.get("delete"), dict):
            self._delete_rules(body["delete"].get("ids", []), dry_run)
        else:
            self._send_json(400, _invalid_request("Request body must contain 'add' or 'delete'."))

    def _add_rules(self, additions: list, dry_run: bool) -> None:
        fake = self.fake
        created, errors = [], []
        with fake._lock:
            # value -> id of the rule holding it: live ones, then those made by this request
            holders = {r["value"]: rule_id for rule_id, r in fake.rules.items()}
            for rule in additions:
                value = rule.get("value") if isinstance(rule, dict) else None
                if not isinstance(value, str) or not value.strip():
                    self._send_json(400, _invalid_request("rule value must be a non-empty string"))
                    return
                if value in holders:
                    errors.append(
                        {
                            "value": value,
                            "id": holders[value],
                            "title": "DuplicateRule",
                            "type": "https://api.twitter.com/2/problems/duplicate-rules",
                        }
                    )
                    continue
                syntax = rule_syntax_problems(value)
                if syntax:
                    errors.append(
                        {
                            "value": value,
                            "details": syntax,
                            "title": "UnprocessableEntity",
                            "type": "https://api.twitter.com/2/problems/invalid-rules",
                        }
                    )
                    continue
                if len(value) > fake.rule_max_length:
                    errors.append(
                        {
                            "value": value,
                            "details": [
                                f"Rule '{value}' is too long: {len(value)} characters, the "
                                f"maximum for your access level is {fake.rule_max_length}"
                            ],
                            "title": "UnprocessableEntity",
                            "type": "https://api.twitter.com/2/problems/invalid-rules",
                        }
                    )
                    continue
                new = {"id": str(next(fake._rule_ids)), "value": value}
                if rule.get("tag") is not None:
                    new["tag"] = rule["tag"]
                holders[value] = new["id"]
                created.append(new)
            if not dry_run:
                fake.rules.update({r["id"]: r for r in created})
                fake._update_matching_rules()
        summary = {
            "created": len(created),
            "not_created": len(errors),
            "valid": len(created),
            "invalid": len(errors),
        }
        body: dict = {"meta": {"sent": _now_iso(), "summary": summary}}
        if created:
            body["data"] = [{"value": r["value"], **r} for r in created]
        if errors:
            body["errors"] = errors
        self._send_json(200, body)

    def _delete_rules(self, ids: list, dry_run: bool) -> None:
        fake = self.fake
        with fake._lock:
            known = [str(i) for i in ids if str(i) in fake.rules]
            missing = [str(i) for i in ids if str(i) not in fake.rules]
            if not dry_run:
                for rule_id in known:
                    del fake.rules[rule_id]
                fake._update_matching_rules()
        body: dict = {
            "meta": {
                "sent": _now_iso(),
                "summary": {"deleted": len(known), "not_deleted": len(missing)},
            }
        }
        if missing:
            body["errors"] = [
                {
                    "errors": [{"parameters": {}, "message": "Rule does not exist"}],
                    "title": "Invalid Request",
                    "detail": "One or more parameters to your request was invalid.",
                    "type": "https://api.twitter.com/2/problems/invalid-request",
                    "value": rule_id,
                }
                for rule_id in missing
            ]
        self._send_json(200, body)

    # Stream -----------------------------------------------------------------------------

    def _stream(self) -> None:
        fake = self.fake
        filtered = urlsplit(self.path).path == "/2/tweets/search/stream"
        with fake._lock:
            fake.connections += 1
            fake.connection_times.append(time.monotonic())
            fake.stream_queries.append(parse_qs(urlsplit(self.path).query))
            fake._stream_attempted()
            failure = fake._fail_next.pop(0) if fake._fail_next else None
            drop_after, fake._drop_after = fake._drop_after, None
            refusal = fake.stream_refusal
            try:
                selection = FieldSelection.from_query(fake.stream_queries[-1])
            except InvalidFields as invalid:
                selection, refusal = FieldSelection(), (400, invalid.body)
            if failure is not None:
                refusal = (failure, PROBLEMS.get(failure, {"title": "Error", "status": failure}))
            elif refusal is None and filtered and not fake.rules:
                refusal = (409, PROBLEMS[409])
        for gate in STREAM_GATES if refusal is None else []:
            refusal = gate(fake, self)
            if refusal is not None:
                break
        if refusal is not None:
            self._send_json(refusal[0], refusal[1], {"Connection": "close"})
            self.close_connection = True
            return
        if fake.disconnect_every_connection:
            fake._disconnect.set()
        else:
            fake._disconnect.clear()
        connection = {
            "id": uuid.uuid4().hex,
            "endpoint_name": "filtered_stream" if filtered else "sample_stream",
            "connected_at": _now_iso(),
            "client_ip": self.client_address[0],
            "kill": threading.Event(),
        }
        with fake._lock:  # X counts a connection from its acceptance on
            fake.stream_connections[connection["id"]] = connection
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self._send_api_version()
        self.end_headers()
        self.close_connection = True
        replay, replay_only = [], False
        with fake._lock:  # the timeline stops at the opening: a backfill replays all it missed
            down_since = fake._stream_opened()
            for hook in STREAM_REPLAYS:
                answer = hook(fake, fake.stream_queries[-1], selection)
                if answer is not None:
                    replay, replay_only = replay + answer[0], replay_only or answer[1]
            if replay_only:  # a Recovery job is no live stream: the timeline goes on as before
                fake.streams_open -= 1
                fake._down_since = down_since
        if replay_only:  # a Recovery job: the period again, then the end; not the live stream
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
                if replay:
                    self._write_posts(replay)
                self.wfile.write(b"0\r\n\r\n")
            with fake._lock:
                fake.stream_connections.pop(connection["id"], None)
            return
        try:
            if replay:  # backfill: what matched before the connection, oldest first
                self._write_posts(replay)
            self._stream_posts(drop_after, connection["kill"], selection)
        except (BrokenPipeError, ConnectionResetError, OSError):
            log.debug("stream client went away")
        finally:
            with fake._lock:
                fake._stream_closed()
                fake.stream_connections.pop(connection["id"], None)

    def _write_chunk(self, data: bytes) -> None:
        fake = self.fake
        if fake.first_byte_at is None:
            fake.first_byte_at = time.time()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        fake.bytes_sent += len(data)

    def _write_posts(self, posts: list[tuple[str | None, bytes]]) -> None:
        self._write_chunk(b"".join(line for _, line in posts))
        fake = self.fake
        ids = [post_id for post_id, _ in posts if post_id is not None]
        fake.sent_ids.extend(ids)
        fake.record_delivered(ids)
        fake.last_post_at = time.time()

    def _stream_posts(
        self, drop_after: int | None, kill: threading.Event, selection: FieldSelection
    ) -> None:
        fake = self.fake
        last_write = time.monotonic()
        sent_here = 0
        next_due = time.monotonic()
        while not fake._stopping.is_set():
            if kill.is_set():  # ended through the Connections API
                self.wfile.write(b"0\r\n\r\n")
                return
            now = time.monotonic()
            if now < fake._stall_until:
                time.sleep(min(0.05, fake._stall_until - now))
                continue
            if fake._disconnect.is_set():
                fake._disconnect.clear()
                self._write_chunk(_dumps(OPERATIONAL_DISCONNECT) + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            with fake._lock:
                injections, fake._injections = fake._injections, []
            for line in injections:
                self._write_posts([(fake._line_id(line), line)])
                last_write = time.monotonic()
            if drop_after is not None and sent_here >= drop_after:
                cut = fake._take_posts(1, selection) or [(None, b'{"data":{"id":"0"}}\r\n')]
                post_id, line = cut[0]
                self._write_chunk(line[: len(line) // 2])
                return  # closing without the terminating chunk: the client sees a cut line
            wanted = 1 if fake.rate > 0 else max(1, BATCH_BYTES // 4500)
            if drop_after is not None:
                wanted = min(wanted, drop_after - sent_here)
            posts = fake._take_posts(wanted, selection) if now >= next_due else []
            if posts:
                self._write_posts(posts)
                sent_here += len(posts)
                last_write = time.monotonic()
                if fake.rate > 0:
                    next_due = max(next_due + 1.0 / fake.rate, time.monotonic() - 1.0)
                continue
            count_done = fake.count is not None and fake._posts_taken >= fake.count
            if fake.close_after_count and count_done:
                self.wfile.write(b"0\r\n\r\n")
                return
            if time.monotonic() - last_write >= fake.keepalive_interval:
                self._write_chunk(b"\r\n")
                fake.last_keepalive_at = time.time()
                last_write = time.monotonic()
            time.sleep(min(0.05, max(0.0, next_due - time.monotonic()) or 0.05))


def _invalid_request(message: str) -> dict:
    return {
        "errors": [{"parameters": {}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }


def _load_extensions() -> None:
    """Import every tests/fakes/x_api_*.py module: each registers its routes and knobs."""
    if __name__ == "__main__":  # python -m tests.fakes.x_server: one module, one registry
        sys.modules.setdefault("tests.fakes.x_server", sys.modules[__name__])
    folder = Path(__file__).resolve().parent
    for module in sorted(pkgutil.iter_modules([str(folder)]), key=lambda m: m.name):
        if module.name.startswith("x_api_"):
            importlib.import_module(f"tests.fakes.{module.name}")


def _share(value: str) -> float:
    """argparse type: a share from 0 to 1."""
    share = float(value)
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return share


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="posts/s, 0 = as fast as possible")
    parser.add_argument("--count", type=int, default=None, help="stop after N posts")
    parser.add_argument("--keepalive-interval", type=float, default=20.0)
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="picks the posts' words, authors, reposts, media, polls and edits (default 1: "
        "the same posts every run; another number, other posts)",
    )
    parser.add_argument("--close-after-count", action="store_true", help="end the stream then")
    parser.add_argument("--rule", action="append", default=[], help="a rule live from the start")
    parser.add_argument(
        "--note-share",
        type=_share,
        default=0.0,
        help="share of posts that are long posts (0 to 1, default 0: none): `text` cut near "
        f"{NOTE_CUT} characters, the full {NOTE_CHARS:,}-character text in note_tweet",
    )
    parser.add_argument(
        "--renamed-fields",
        action="store_true",
        help="answer with OpenAPI 2.167's spellings (edit_history_post_ids, note_post, "
        "referenced_posts; default: the old ones, as live X sends)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = FakeXServer(
        token=args.token_file.read_text().strip(),
        port=args.port,
        host=args.host,
        rate=args.rate,
        count=args.count,
        keepalive_interval=args.keepalive_interval,
        seed=args.seed,
    )
    server.close_after_count = args.close_after_count
    server.note_share = args.note_share
    server.renamed_fields = args.renamed_fields
    for value in args.rule:
        server.add_rule(value)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    server.start()
    log.info("X API stand-in listening on %s", server.url)
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    server.stop()


_load_extensions()

if __name__ == "__main__":
    main()
