"""The X API v2 stream reader: tweepy's StreamingClient, pointed at x.api_base_url, raw lines out.

tweepy keeps the connection and implements X's reconnect rules (immediate reconnect after a
drop, linear backoff for network errors, exponential for HTTP errors, 60 s doubling for 429,
reconnect after 21 s without a keep-alive). We only take the raw bytes of the lines
(`on_data`) and hand them to the spool writer without parsing them here, and we stop on
401/403, which tweepy would otherwise retry forever.

X delimits messages with CRLF and sends a bare CRLF as keep-alive (X API docs, "Consuming
streaming data"). tweepy reads lines through requests' `Response.iter_lines`; ours
(StreamResponse) hands over, per network read, every complete line of that read as one
LineBatch instead of one call per line, so the per-post Python work is gone. A keep-alive
is still one empty line (tweepy's on_keep_alive), and bytes after the last CRLF when the
connection ends (a message cut short) are handed over on their own, to be checked in full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import requests
import tweepy

from collector.config import Config
from collector.metrics import Metrics
from collector.spool import LineBatch

log = logging.getLogger(__name__)

TWEEPY_HOST = "https://api.twitter.com"
# tweepy's default of 512 bytes per read caps ingest far below what one connection delivers.
# A read returns what one HTTP chunk holds (up to this size) and never waits for more.
CHUNK_SIZE = 1024 * 1024
FATAL_STATUSES = {401: "rejected the bearer token", 403: "refused access (forbidden)"}


class _Redirect(requests.adapters.HTTPAdapter):
    """Send what tweepy addresses to api.twitter.com to the configured base URL instead."""

    def __init__(self, base_url: str) -> None:
        super().__init__(pool_maxsize=4)
        self.base_url = base_url.rstrip("/")

    def send(self, request, **kwargs):
        if request.url.startswith(TWEEPY_HOST):
            request.url = self.base_url + request.url[len(TWEEPY_HOST) :]
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
    client.session.mount(TWEEPY_HOST, _Redirect(cfg.x.api_base_url))
    return client


class XStream(tweepy.StreamingClient):
    """Reads the stream in tweepy's thread and passes every non-empty line to `on_line`."""

    def __init__(
        self, token: str, *, on_line: Callable[[bytes], None], metrics: Metrics, **kwargs
    ) -> None:
        super().__init__(token, **kwargs)
        self._on_line = on_line
        self.metrics = metrics
        self.fatal: str | None = None  # set when the server refuses us for good
        self.connected = threading.Event()
        # on_event(state, cause) at each change of connection state (collector.events)
        self.on_event: Callable[[str, str | None], None] | None = None
        self.metrics.set("connection", "connecting")
        self.metrics.set("connection_since", time.time())

    # tweepy calls on_data with what StreamResponse.iter_lines yields: a LineBatch of
    # complete lines, or the unterminated bytes left when a connection ended.
    def on_data(self, raw_data: bytes) -> None:
        self._on_line(raw_data)

    def on_keep_alive(self) -> None:
        self.metrics.incr("keep_alives")

    def on_connect(self) -> None:
        log.info("stream connected to %s", self.metrics.snapshot().get("stream_url", "X"))
        self.connected.set()
        self.metrics.incr("connects")
        self._set_state("connected")

    def _set_state(self, state: str, cause: str | None = None) -> None:
        if self.metrics.snapshot().get("connection") != state:
            self.metrics.set("connection", state)
            self.metrics.set("connection_since", time.time())
            if self.on_event is not None:
                self.on_event(state, cause)

    def on_closed(self, response) -> None:
        log.warning("stream closed by the server; reconnecting")
        self.metrics.incr("reconnects")
        self._set_state("disconnected", "stream closed by X")

    def on_connection_error(self) -> None:
        # tweepy logs the error text itself (no secrets: requests' messages carry host and port).
        self.metrics.incr("reconnects")
        self.metrics.set("last_error", "stream connection error or timeout")
        self._set_state("disconnected", "stream connection error or timeout")

    def on_request_error(self, status_code: int) -> None:
        self.metrics.incr("http_errors")
        self._set_state("disconnected", f"stream HTTP {status_code}")
        if status_code in FATAL_STATUSES:
            self.fatal = f"X API {FATAL_STATUSES[status_code]} (HTTP {status_code})"
            log.info("stream HTTP %d: stopping instead of retrying", status_code)
            self.metrics.set("last_error", self.fatal)
            self.disconnect()
            return
        self.metrics.set("last_error", f"stream HTTP {status_code}")
        log.warning("stream HTTP error %d; tweepy backs off and retries", status_code)

    def on_exception(self, exception: Exception) -> None:
        # One line, no traceback: it could carry data; the app decides what to do next.
        self.fatal = self.fatal or f"stream reader failed: {type(exception).__name__}: {exception}"
        log.error("%s", self.fatal)
        self.metrics.set("last_error", self.fatal)

    def on_disconnect(self) -> None:
        self._set_state("disconnected", "stream reader stopped")
        log.info("stream reader stopped")


def open_stream(cfg: Config, token: str, on_line: Callable[[bytes], None], metrics: Metrics):
    """Create the stream client; `start_stream` connects it in a background thread."""
    stream = make_client(cfg, token, XStream, on_line=on_line, metrics=metrics)
    path = "search" if cfg.x.stream == "filter" else "sample"
    metrics.set("stream_url", f"{cfg.x.api_base_url.rstrip('/')}/2/tweets/{path}/stream")
    return stream


def start_stream(cfg: Config, stream: XStream) -> threading.Thread:
    params = {
        "tweet_fields": cfg.x.tweet_fields or None,
        "expansions": cfg.x.expansions or None,
        "user_fields": cfg.x.user_fields or None,
        "threaded": True,
    }
    if cfg.x.stream == "filter":
        return stream.filter(**params)
    return stream.sample(**params)
