"""The X API v2 stream reader: tweepy's StreamingClient, pointed at x.api_base_url, raw lines out.

tweepy keeps the connection and implements X's reconnect rules (immediate reconnect after a
drop, linear backoff for network errors, exponential for HTTP errors, 60 s doubling for 429,
reconnect after 21 s without a keep-alive). We only take the raw bytes of the lines
(`on_data`) and hand them to the spool writer without parsing them here (the last line before
X closes a connection is read for X's reason), we stop on 401/403 and on 409 (no rule is live:
exit 78), which tweepy would otherwise retry forever, and we add a reconnect floor (XStream).

X delimits messages with CRLF and sends a bare CRLF as keep-alive (X API docs, "Consuming
streaming data"). tweepy reads lines through requests' `Response.iter_lines`; ours
(StreamResponse) hands over, per network read, every complete line of that read as one
LineBatch instead of one call per line, so the per-post Python work is gone. A keep-alive
is still one empty line (tweepy's on_keep_alive), and bytes after the last CRLF when the
connection ends (a message cut short) are handed over on their own, to be checked in full.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import requests
import tweepy

from collector.config import Config, bearer_token_source
from collector.errors import XNotAvailable, XRequestError
from collector.source.account import ACCOUNT_STATES, AccountState, account_state
from collector.spool.writer import LineBatch
from collector.telemetry.health import DEGRADED, FAILING, Health, x_problem_reason
from collector.telemetry.lograte import RepeatedWarnings
from collector.telemetry.metrics import (
    CONNECTION,
    CONNECTION_SINCE,
    CONNECTS,
    HTTP_ERRORS,
    KEEP_ALIVES,
    LAST_ERROR,
    LAST_STREAM_ERROR,
    NEXT_ATTEMPT_AT,
    RECONNECTS,
    STREAM_URL,
    X_ACCOUNT_STATE,
    X_API_VERSION,
    X_PROJECT_CAP,
    X_PROJECT_USAGE,
    Metrics,
)

log = logging.getLogger(__name__)

TWEEPY_HOST = "https://api.twitter.com"
# tweepy's default of 512 bytes per read caps ingest far below what one connection delivers.
# A read returns what one HTTP chunk holds (up to this size) and never waits for more.
CHUNK_SIZE = 1024 * 1024
FATAL_STATUSES = {401: "rejected the bearer token", 403: "refused access (forbidden)"}
SHORT_CONNECTION = 10.0  # s: a connection X ends sooner counts as a failed attempt
# s: the wait after the n-th short connection: 1 s doubling, with jitter, capped at X's 320 s
RECONNECT_BASE, RECONNECT_CAP = 1.0, 320.0
STREAM_DEGRADED_AFTER = 30.0  # s: a stream problem shorter than this is a blip, not a state
STREAM_FAILING_AFTER = 120.0  # s: a stream problem that lasts this long is failing
# s: X sends a keep-alive every 20 s; a connection silent this long is stalled (X API docs,
# "Consuming streaming data"; tweepy ends it after 21 s without a byte)
KEEP_ALIVE_INTERVAL = 20.0
STALL_REASON = (
    "no data from X for {lasted} s (stalled; X sends a keep-alive every "
    f"{KEEP_ALIVE_INTERVAL:.0f} s)"
)
STALE_RECONNECT = 1.0  # s: the wait after ending stale connections through X's Connections API
STALE_CLEAR_INTERVAL = 60.0  # s: at most one Connections API clean-up this often
# Said while X still counts a dead connection and the Connections API cannot end it.
WAIT_FOR_X = (
    "nothing to do but wait: X ends a connection whose client died once its own timeout "
    "passes (minutes), and the collector connects then; x.clear_stale_connections cannot help "
    "without the Connections API; a restart (supervisorctl restart twittersnake) "
    "tries again at once"
)
STALE_ENDED_REASON = (
    "X refused the connection (TooManyConnections): ended {count} stale connection(s) through "
    "X's Connections API"
)
# tweepy's waits after an HTTP error (tweepy.streaming.BaseStream._connect): 5 s doubling,
# at least 60 s after a 429, capped at 320 s.
TWEEPY_HTTP_WAIT, TWEEPY_429_WAIT, TWEEPY_WAIT_CAP = 5.0, 60.0, 320.0


class _TweepyRefusalText(logging.Filter):
    """Drop tweepy's `HTTP error response text: {...}` line: the collector logs X's answer
    itself (on_request_error, one line per refusal), so tweepy's copy only doubles it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HTTP error response text")


_TWEEPY_FILTER = _TweepyRefusalText()
logging.getLogger("tweepy.streaming").addFilter(_TWEEPY_FILTER)


def iso_in(seconds: float) -> str:
    """The UTC time `seconds` from now, ISO 8601 (status.json's next_attempt_at)."""
    return datetime.fromtimestamp(time.time() + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Redirect(requests.adapters.HTTPAdapter):
    """Send what tweepy addresses to api.twitter.com to the configured base URL instead."""

    def __init__(self, base_url: str, timeout: float | None = None) -> None:
        super().__init__(pool_maxsize=4)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout  # s: for requests that name none (tweepy's Client never does)

    def send(self, request, **kwargs):
        if request.url.startswith(TWEEPY_HOST):
            request.url = self.base_url + request.url[len(TWEEPY_HOST) :]
        if kwargs.get("timeout") is None and self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)

    def build_response(self, req, resp) -> requests.Response:
        response = super().build_response(req, resp)
        response.__class__ = StreamResponse
        return response


def _batches(lines: list[bytes]):
    """LineBatch runs of `lines`, and b"" for each empty line (a keep-alive)."""
    if b"" not in lines:
        yield LineBatch(lines)  # the common case: no keep-alive among the posts
        return
    run = LineBatch()
    for line in lines:
        if line:
            run.append(line)
            continue
        if run:
            yield run
            run = LineBatch()
        yield b""
    if run:
        yield run


class LineSplitter:
    """Cuts a byte stream into lines at "\n", a "\r" before it removed, whatever the reads.

    X ends every message with CRLF; a JSON message holds no raw line break, so a bare "\n"
    (as requests' splitlines accepted) ends a line too. bytes.find on one byte is memchr, so
    the scan costs far less per post than bytes.split on b"\r\n".
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []  # the start of a line not yet complete

    @property
    def pending(self) -> bytes:
        return b"".join(self._parts)

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes (b"" for an empty line: a keep-alive)."""
        find = chunk.find
        end = find(b"\n")
        if end < 0:
            self._parts.append(chunk)
            return []
        self._parts.append(chunk[:end])
        first = b"".join(self._parts)
        lines = [first[:-1] if first.endswith(b"\r") else first]
        start = end + 1
        while (end := find(b"\n", start)) >= 0:
            lines.append(chunk[start : end - 1 if chunk[end - 1] == 13 else end])
            start = end + 1
        self._parts = [chunk[start:]] if start < len(chunk) else []
        return lines


class StreamResponse(requests.Response):
    """A requests Response whose iter_lines yields X's CRLF-delimited lines in batches."""

    def iter_lines(self, chunk_size: int = CHUNK_SIZE, decode_unicode=False, delimiter=None):
        """Per network read: a LineBatch of its complete lines (b"" for each keep-alive).

        The bytes after the last CRLF wait for the next read; when the connection ends
        (cleanly or not) they are yielded as plain bytes, so a cut message is never lost.
        """
        splitter = LineSplitter()
        try:
            for chunk in self.iter_content(chunk_size=chunk_size):
                if lines := splitter.feed(chunk):
                    yield from _batches(lines)
        except Exception:
            if splitter.pending:
                yield splitter.pending
            raise
        if splitter.pending:
            yield splitter.pending


def make_client(cfg: Config, token: str, client_class=tweepy.StreamingClient, **kwargs):
    """A StreamingClient (or subclass) whose every request goes to cfg.x.api_base_url."""
    client = client_class(token, chunk_size=CHUNK_SIZE, daemon=True, **kwargs)
    return point_at_base_url(client, cfg)


def point_at_base_url(client, cfg: Config, timeout: float | None = None):
    """`client` (any tweepy client) with every request sent to cfg.x.api_base_url; `timeout`
    (s) bounds the requests that set none (tweepy's Client sets none: a silent server would
    otherwise hold the caller, the stream reader included, forever)."""
    client.session.mount(TWEEPY_HOST, _Redirect(cfg.x.api_base_url, timeout))
    return client


class XStream(tweepy.StreamingClient):
    """Reads the stream in tweepy's thread and passes every batch of lines to `on_line`.

    Beside tweepy's own backoff (which restarts from zero after every accepted connection), a
    connection that X ends within SHORT_CONNECTION seconds, however it ended, counts as a
    failed attempt: the next connection waits an exponential backoff with jitter (from 1 s,
    doubling, capped at 320 s, X's cap for HTTP errors in
    https://docs.x.com/x-api/posts/filtered-stream/integrate/handling-disconnections), reset
    after a connection that stayed open for SHORT_CONNECTION. Refusals carry X's problem
    (title, detail) into the log, `last_error` and the health state.

    A connection counts as healthy only once data (any byte, a keep-alive too) arrived on it:
    a run of connections that end without a byte is one stream condition from the last byte
    received (STALL_REASON once nothing arrived for KEEP_ALIVE_INTERVAL), degraded after
    STREAM_DEGRADED_AFTER, failing after STREAM_FAILING_AFTER. on_flow(True, at) is told the
    first data of a connection, on_flow(False, at) the end of a connection that had data, `at`
    its last byte (UTC): gap repair's spans run between the two.
    """

    def __init__(
        self,
        token: str,
        *,
        on_line: Callable[[bytes], None],
        metrics: Metrics,
        health: Health | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str, str | None], None] | None = None,
        token_source: str = "the configuration",
        config: Config | None = None,
        on_account_refusal: Callable[[AccountState], None] | None = None,
        on_flow: Callable[[bool, datetime], None] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(token, **kwargs)
        self._on_line = on_line
        self.metrics = metrics
        self.health = health or Health()
        self.clock = clock
        self.fatal: str | None = None  # set when the server refuses us for good
        self.fatal_is_config = False  # a refusal a restart cannot fix (exit 78)
        self.token_source = token_source  # where the token came from, for the refusal's message
        self.connected = threading.Event()
        # on_event(state, cause) at each change of connection state (collector.telemetry.events)
        self.on_event = on_event
        self.stopping = False
        self.paused_reason: str | None = None  # set while the budget holds the stream closed
        self._wake = threading.Event()  # ends a backoff wait on stop
        # Account-level refusals (collector.source.account): the wait before the next attempt,
        # by ACCOUNT_STATES key (tests shorten them); resume_in is set while paused.
        self.account_retry = {k: s.retry_seconds for k, s in ACCOUNT_STATES.items()}
        self.resume_in: float | None = None
        # told each account-level refusal (gap repair leaves such spans to a repair by hand)
        self.on_account_refusal = on_account_refusal
        self._http_wait = 0.0  # s: tweepy's wait before its next attempt (its own counter)
        self.cfg = config  # for X's usage and Connections APIs
        self.token = token
        self.api_version: str | None = None  # X's `api-version` header of the last answer
        self._stale_cleared_at: float | None = None
        self._connections_api_problem: str | None = None
        self._connected_at: float | None = None
        self._generation = 0
        self._short_attempts = 0
        self._last_problem: tuple[int, dict] | None = None
        self._last_data: object = None  # what on_data got last (X's reason before a close)
        self.on_flow = on_flow
        self._receiving = False  # data arrived on the connection now open
        self._stalled = False  # the stream condition is a stall (cleared by the next byte)
        self._quiet_since: float | None = None  # self.clock() of the last byte received
        self.last_data_at: datetime | None = None  # UTC: the last byte received
        self.warnings = RepeatedWarnings(log)
        self.session.hooks["response"].append(self._remember_problem)
        self.metrics.set(CONNECTION, "connecting")
        self.metrics.set(CONNECTION_SINCE, time.time())

    def _remember_problem(self, response, *args, **kwargs):
        """Keep X's problem JSON of a refused stream connection (tweepy passes only the code)."""
        url = response.url
        version = response.headers.get("api-version")
        if version and "/stream" in url and "/rules" not in url:
            self.api_version = version
            self.metrics.set(X_API_VERSION, version)
        if response.status_code >= 400 and "/stream" in url and "/rules" not in url:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:300]}
            self._last_problem = (
                response.status_code,
                problem if isinstance(problem, dict) else {},
            )
        return response

    # tweepy calls on_data with what StreamResponse.iter_lines yields: a LineBatch of
    # complete lines, or the unterminated bytes left when a connection ended.
    def on_data(self, raw_data: bytes) -> None:
        self._last_data = raw_data
        self._received()
        self._on_line(raw_data)

    def _received(self) -> None:
        """Data (a line, a keep-alive, a cut message) arrived: the stream is not silent."""
        self._quiet_since = now = self.clock()
        self.last_data_at = datetime.now(UTC)
        if self._receiving:
            return
        self._receiving = True
        if self.on_flow is not None:
            self.on_flow(True, self.last_data_at)
        connected_at = self._connected_at
        if self._stalled or (connected_at is not None and now - connected_at >= SHORT_CONNECTION):
            self._healthy_again()

    def _closing_message(self) -> dict | None:
        """X's error message when it was the last line before the close (operational-disconnect)."""
        last = self._last_data
        if isinstance(last, list):
            last = last[-1] if last else None
        if not isinstance(last, bytes) or not last.startswith(b'{"errors"'):
            return None
        try:
            errors = json.loads(last).get("errors") or []
        except (ValueError, AttributeError):
            return None
        return errors[0] if errors and isinstance(errors[0], dict) else None

    def on_keep_alive(self) -> None:
        self._received()
        self.metrics.incr(KEEP_ALIVES)

    def on_connect(self) -> None:
        self._connected_at = self.clock()
        self._last_data = None
        self._receiving = False
        if self._quiet_since is None:  # silent from its start
            self._quiet_since = self._connected_at
        self._generation += 1
        confirm = threading.Timer(SHORT_CONNECTION, self._connection_lasted, (self._generation,))
        confirm.daemon = True
        confirm.start()
        if self._short_attempts == 0:
            log.info("stream connected to %s", self.metrics.snapshot().get("stream_url", "X"))
        self.connected.set()
        self._http_wait = 0.0
        self.metrics.set(X_ACCOUNT_STATE, None)
        self.metrics.set(NEXT_ATTEMPT_AT, None)
        self.metrics.incr(CONNECTS)
        self._set_state("connected")

    def _connection_lasted(self, generation: int) -> None:
        if generation == self._generation and self._connected_at is not None and self._receiving:
            self._healthy_again()

    def _healthy_again(self) -> None:
        """A connection with data that stayed open (or data after a stall): the stream is fine."""
        if self._short_attempts:
            log.info("stream connected and stayed open; reconnect backoff reset")
        if self._stalled:
            log.info("stream: data from X again after the stall")
        self._short_attempts = 0
        self._stalled = False
        self.warnings.reset("closed")
        self.warnings.reset("stalled")
        self.health.clear("stream")

    def _set_state(self, state: str, cause: str | None = None) -> None:
        if self.metrics.snapshot().get("connection") != state:
            self.metrics.set(CONNECTION, state)
            self.metrics.set(CONNECTION_SINCE, time.time())
            if self.on_event is not None:
                self.on_event(state, cause)

    def disconnect(self) -> None:
        """Stop on request: not a server close, not a reconnect."""
        self.stopping = True
        self._wake.set()
        super().disconnect()

    def stopped(self) -> None:
        """After a stop: an open (or opening) connection is closed now, so status.json says
        disconnected, not connected, once the collector has stopped. No event: the `stop`
        event says why. A pause stays `paused` (the budget closed it, and says so)."""
        if self.metrics.snapshot().get("connection") in ("connected", "connecting"):
            self.metrics.set(CONNECTION, "disconnected")
            self.metrics.set(CONNECTION_SINCE, time.time())

    def pause(self, reason: str, until: datetime | None = None) -> None:
        """Close the connection on purpose (the budget is spent): no reconnect until resume(),
        expected at `until` (status.json's next_attempt_at)."""
        self.paused_reason = reason
        if until is not None:
            self.metrics.set(NEXT_ATTEMPT_AT, until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.disconnect()
        self._set_state("paused", reason)  # also when no connection was open (a start paused)

    def resume(self) -> None:
        """Allow connections again after pause(); start_stream then opens one."""
        self.paused_reason = None
        self.stopping = False
        self._wake.clear()

    def _ended(self) -> float | None:
        """Seconds the connection that just ended was open (None: it never opened)."""
        connected_at, self._connected_at = self._connected_at, None
        self._generation += 1
        if connected_at is not None and self._receiving:
            self._receiving = False
            if self.on_flow is not None:
                self.on_flow(False, self.last_data_at or datetime.now(UTC))
        return None if connected_at is None else self.clock() - connected_at

    def _quiet_for(self) -> float:
        """Seconds since the last byte received (since the first connection if none yet)."""
        return 0.0 if self._quiet_since is None else max(0.0, self.clock() - self._quiet_since)

    def _backoff(self, reason: str) -> None:
        """A failed attempt: wait before the next connection, show why in health and log."""
        self._short_attempts += 1
        attempt = self._short_attempts
        ceiling = min(RECONNECT_CAP, RECONNECT_BASE * 2 ** min(attempt - 1, 16))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # equal jitter: never near 0
        self.health.report(
            "stream",
            DEGRADED,
            f"X stream: {reason}; reconnecting with backoff (attempt {attempt})",
            failing_after=STREAM_FAILING_AFTER,
            degraded_after=STREAM_DEGRADED_AFTER,
            lasted=self._quiet_for(),
        )
        self.warnings.warning(
            "closed", "stream: %s; next connection in %.0f s (attempt %d)", reason, delay, attempt
        )
        self.metrics.set(NEXT_ATTEMPT_AT, iso_in(delay))
        self._wake.wait(delay)

    def on_closed(self, response) -> None:
        lasted = self._ended()
        if self.stopping:
            if self.paused_reason is None:  # a pause stays `paused`: the budget closed it
                self._set_state("disconnected", "stream stopped")
            return
        problem = self._closing_message()
        said = x_problem_reason(None, problem) if problem else "X closed the connection"
        self._set_state("disconnected", f"stream closed by X: {said}")
        self.metrics.incr(RECONNECTS)
        if lasted is not None and lasted < SHORT_CONNECTION:
            self.metrics.set(LAST_STREAM_ERROR, said)
            self._backoff(f"{said} after {lasted:.1f} s")
        else:
            self.warnings.warning("closed", "stream closed by the server (%s); reconnecting", said)

    def on_connection_error(self) -> None:
        # tweepy logs the error text itself (no secrets: requests' messages carry host and port).
        lasted = self._ended()
        quiet = self._quiet_for()
        # an open connection ended with nothing received for longer than X's keep-alive interval
        stalled = lasted is not None and quiet >= KEEP_ALIVE_INTERVAL
        said = STALL_REASON.replace("{lasted}", f"{quiet:.0f}") if stalled else None
        self._set_state("disconnected", said or "stream connection error or timeout")
        if self.stopping:
            return
        self.metrics.incr(RECONNECTS)
        if said is not None:
            self._stall(said, quiet)
            return
        self.metrics.set(LAST_ERROR, "stream connection error or timeout")
        if lasted is not None and lasted < SHORT_CONNECTION:
            self._backoff(f"connection failed after {lasted:.1f} s")
        else:
            self.health.report(
                "stream",
                DEGRADED,
                "X stream: connection error or timeout; tweepy reconnects",
                failing_after=STREAM_FAILING_AFTER,
                degraded_after=STREAM_DEGRADED_AFTER,
                lasted=quiet,
            )

    def _stall(self, said: str, quiet: float) -> None:
        """Nothing, not even a keep-alive, arrived for `quiet` seconds: one condition from the
        last byte, however many connections tweepy opens meanwhile, until data arrives."""
        self._stalled = True
        self.metrics.set(LAST_ERROR, f"X stream: {said}")
        self.metrics.set(LAST_STREAM_ERROR, said)
        self.health.report(
            "stream",
            DEGRADED,
            f"X stream: {STALL_REASON}; tweepy reconnects",
            failing_after=STREAM_FAILING_AFTER,
            degraded_after=STREAM_DEGRADED_AFTER,
            lasted=quiet,
            timed=True,
        )
        self.warnings.warning("stalled", "stream: %s; tweepy reconnects", said)

    def on_request_error(self, status_code: int) -> None:
        self._ended()
        self.metrics.incr(HTTP_ERRORS)
        last = self._last_problem
        problem = last[1] if last and last[0] == status_code else {}
        reason = x_problem_reason(status_code, problem)
        self._set_state("disconnected", f"stream {reason}")
        self.metrics.set(LAST_STREAM_ERROR, reason)
        state = account_state(status_code, problem)
        if state is not None:
            self.metrics.set(LAST_ERROR, f"X stream refused: {reason}")
            self.metrics.set(X_ACCOUNT_STATE, state.name)
            if not state.repaired_automatically and self.on_account_refusal is not None:
                self.on_account_refusal(state)
            if state.key == "too-many-connections":
                self._too_many_connections(state, reason)
            else:
                self._account_refusal(state, reason)
            return
        if status_code in FATAL_STATUSES or status_code == 409:
            what = FATAL_STATUSES.get(status_code, "refused the filtered stream")
            if status_code == 401:
                what = f"{what} from {self.token_source}"
            self.fatal = f"X API {what}: {reason}"
            self.fatal_is_config = True
            log.info("stream HTTP %d: stopping instead of retrying", status_code)
            self.metrics.set(LAST_ERROR, self.fatal)  # the app exits 78 with this line
            self.disconnect()
            return
        self.metrics.set(LAST_ERROR, f"X stream refused: {reason}")
        self.metrics.set(X_ACCOUNT_STATE, None)
        wait = self._tweepy_wait(status_code)
        self.metrics.set(NEXT_ATTEMPT_AT, iso_in(wait))
        # 429 (usage cap, too many connections) collects nothing until X lifts it.
        severity = FAILING if status_code == 429 else DEGRADED
        self.health.report(
            "stream",
            severity,
            f"X refuses the stream: {reason}; next attempt in {wait:.0f} s (tweepy's backoff)",
            failing_after=STREAM_FAILING_AFTER,
            degraded_after=0.0 if severity == FAILING else STREAM_DEGRADED_AFTER,
        )
        self.warnings.warning(
            f"http-{status_code}", "stream refused: %s; tweepy backs off and retries", reason
        )

    def _tweepy_wait(self, status_code: int) -> float:
        """Seconds tweepy waits before its next attempt after this HTTP error (its rule)."""
        wait = self._http_wait or TWEEPY_HTTP_WAIT
        if status_code in (420, 429):
            wait = max(wait, TWEEPY_429_WAIT)
        self._http_wait = min(wait * 2, TWEEPY_WAIT_CAP)
        return wait

    def _pause(self, seconds: float) -> None:
        """End tweepy's connection loop now (no backoff of its own); the runner (`run`)
        connects again after `seconds`."""
        self.metrics.set(NEXT_ATTEMPT_AT, iso_in(seconds))
        self.resume_in = seconds
        tweepy.StreamingClient.disconnect(self)

    def _account_refusal(self, state: AccountState, said: str) -> None:
        """402 credits, the spending limit, the monthly cap: failing at once, with the reason,
        the day it lifts and the remedy; one attempt per the state's retry interval."""
        retry = self.account_retry[state.key] or RECONNECT_CAP
        lifts = f"; {self._lift_day()}" if state.lifts_with_cycle else ""
        text = f"{state.reason}{lifts} ({said}): {state.remedy}"
        self.health.report("stream", state.health, text, degraded_after=0.0)
        self.warnings.warning(
            f"account-{state.key}", "stream refused: %s; next attempt in %.0f s", text, retry
        )
        self._pause(retry)

    def _lift_day(self) -> str:
        """When the billing cycle resets, from X's GET /2/usage/tweets cap_reset_day."""
        from collector.source.usage import post_usage

        if self.cfg is None:
            return "lifts when the billing cycle resets"
        try:
            usage = post_usage(self.cfg, self.token, days=1)
        except XRequestError as exc:
            return f"lifts when the billing cycle resets (cap_reset_day unknown: {exc})"
        # X's own count: status shows the cap's use from it (collector.telemetry.status)
        self.metrics.set(X_PROJECT_USAGE, usage.project_usage)
        self.metrics.set(X_PROJECT_CAP, usage.project_cap)
        day = usage.cap_resets_on(datetime.now(UTC).date())
        if day is None:
            return "lifts when the billing cycle resets"
        return f"lifts on {day.isoformat()}"

    def _too_many_connections(self, state: AccountState, said: str) -> None:
        """429 TooManyConnections: end the stale connections through X's Connections API and
        reconnect within seconds; else tweepy's 429 backoff, with the reason in the health."""
        fallback = self._clear_stale_connections()
        if fallback is None:
            return  # paused: reconnecting in STALE_RECONNECT s
        wait = self._tweepy_wait(429)
        self.metrics.set(NEXT_ATTEMPT_AT, iso_in(wait))
        text = (
            f"{state.reason} ({said}): {fallback}; next attempt in {wait:.0f} s (tweepy's 429 "
            "backoff, 60 s doubling to 320 s)"
        )
        self.health.report("stream", state.health, text, degraded_after=0.0)
        self.warnings.warning("account-too-many-connections", "stream refused: %s", text)

    def _clear_stale_connections(self) -> str | None:
        """None once stale connections were ended (and the reconnect is scheduled); otherwise
        why not, in words for the health reason."""
        from collector.source.connections import end_stale_connections

        if self.cfg is None or not self.cfg.x.clear_stale_connections:
            return (
                "x.clear_stale_connections = false: stop the other client of this X app, or "
                "set it to true so the collector ends stale connections"
            )
        if self._connections_api_problem:
            return (
                f"X's Connections API is not available: {self._connections_api_problem}; "
                f"{WAIT_FOR_X}"
            )
        now = self.clock()
        if (
            self._stale_cleared_at is not None
            and now - self._stale_cleared_at < STALE_CLEAR_INTERVAL
        ):
            return (
                f"stale connections were ended {now - self._stale_cleared_at:.0f} s ago and X "
                "still refuses: another client of this X app may be connected"
            )
        self._stale_cleared_at = now
        kind = "filtered-stream" if self.cfg.x.stream == "filter" else "sample-stream"
        try:
            ended = end_stale_connections(self.cfg, self.token)
        except XNotAvailable as exc:
            self._connections_api_problem = str(exc)
            return f"X's Connections API is not available to this project: {exc}; {WAIT_FOR_X}"
        except XRequestError as exc:
            return f"X's Connections API failed: {exc}"
        if not ended:
            return f"X's Connections API lists no other {kind} connection to end"
        log.warning(
            "ended %d stale %s connection(s) through X's Connections API: %s; reconnecting",
            len(ended),
            kind,
            ", ".join(c.line() for c in ended),
        )
        # Degraded, not failing: the reconnect follows in seconds (a state that heals itself).
        self.health.report(
            "stream",
            DEGRADED,
            f"{STALE_ENDED_REASON.format(count=len(ended))}; reconnecting in "
            f"{STALE_RECONNECT:.0f} s",
            degraded_after=0.0,
        )
        self._pause(STALE_RECONNECT)
        return None

    def run(self, connect: Callable[[], object]) -> None:
        """Call `connect` (tweepy's filter or sample, blocking) again after each pause for an
        account-level refusal, until stopped or the reader ends for another reason."""
        while True:
            self.resume_in = None
            self._http_wait = 0.0  # tweepy's connection loop starts its backoff afresh
            connect()
            wait = self.resume_in
            if wait is None or self.stopping or self.fatal:
                return
            if self._wake.wait(wait):
                return

    def on_exception(self, exception: Exception) -> None:
        # One line, no traceback: it could carry data; the app decides what to do next.
        self.fatal = self.fatal or f"stream reader failed: {type(exception).__name__}: {exception}"
        log.error("%s", self.fatal)
        self.metrics.set(LAST_ERROR, self.fatal)

    def on_disconnect(self) -> None:
        if self.paused_reason is not None:
            self._set_state("paused", self.paused_reason)
            log.info("stream closed: %s", self.paused_reason)
            return
        if self.resume_in is not None and not self.stopping:
            return  # paused for an account-level refusal: `run` connects again
        self._set_state("disconnected", "stream reader stopped")
        log.info("stream reader stopped")


def open_stream(
    cfg: Config,
    token: str,
    on_line: Callable[[bytes], None],
    metrics: Metrics,
    health: Health | None = None,
    on_event: Callable[[str, str | None], None] | None = None,
    on_account_refusal: Callable[[AccountState], None] | None = None,
    on_flow: Callable[[bool, datetime], None] | None = None,
):
    """Create the stream client; `start_stream` connects it in a background thread.

    on_event(state, cause) is told each change of connection state; on_account_refusal(state)
    each account-level refusal gap repair cannot make up for by itself; on_flow(flowing, at)
    when data starts on a connection and when a connection that had data ends (XStream)."""
    stream = make_client(
        cfg,
        token,
        XStream,
        on_line=on_line,
        metrics=metrics,
        health=health,
        on_event=on_event,
        token_source=bearer_token_source(cfg),
        config=cfg,
        on_account_refusal=on_account_refusal,
        on_flow=on_flow,
    )
    path = "search" if cfg.x.stream == "filter" else "sample"
    metrics.set(STREAM_URL, f"{cfg.x.api_base_url.rstrip('/')}/2/tweets/{path}/stream")
    return stream


BACKFILL_MINUTES = 5  # X's maximum (docs.x.com/x-api/fundamentals/recovery-and-redundancy)


def backfills(cfg: Config) -> bool:
    """True when the filtered stream connects with backfill_minutes: gap repair on, Enterprise."""
    return cfg.x.repair == "auto" and cfg.x.limits.backfill


def start_stream(cfg: Config, stream: XStream) -> threading.Thread:
    """The reader thread: tweepy's connection loop, started again after each pause for an
    account-level refusal (XStream.run)."""
    params: dict[str, object] = {**cfg.x.fields.tweepy_arguments()}
    if cfg.x.stream == "filter" and backfills(cfg):
        # Enterprise: every connection asks X for what matched in the last minutes (gap repair)
        params["backfill_minutes"] = BACKFILL_MINUTES
    method = stream.filter if cfg.x.stream == "filter" else stream.sample
    reader = threading.Thread(
        target=stream.run, args=(lambda: method(**params),), name="stream-reader", daemon=True
    )
    reader.start()
    return reader
