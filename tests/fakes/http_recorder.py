"""A loopback HTTP/1.1 reverse proxy that records every request it forwards, unchanged.

proxy = RecordingProxy(target_port).start(); proxy.url   # "http://127.0.0.1:PORT"
proxy.exchanges   # [Exchange(method, path, query, headers, body, status), ...] in arrival order
proxy.answer = fn # fn(handler) -> (status, headers, body) answers a request itself; None relays it

Requests go upstream byte for byte (Host header and body included), so SigV4 signatures stay
valid; a chunked request body is relayed chunk by chunk. Answers come back whole, with
Content-Length. Used to assert what a client really put on the wire (headers, query).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes  # as sent (a chunked body de-chunked)
    status: int


class RecordingProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.exchanges: list[Exchange] = []
        # answer(handler) -> (status, headers, body) to answer a request itself, None to relay it
        self.answer: Callable[[BaseHTTPRequestHandler], tuple[int, dict, bytes] | None] | None
        self.answer = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def _relay(self) -> None:
                body = self._read_body()
                answer = proxy.answer(self) if proxy.answer is not None else None
                if answer is not None:  # the test's own answer instead of the upstream's
                    status, headers, payload = answer
                    proxy._record(self, body, status)
                    self.send_response_only(status)
                    for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(*proxy.target, timeout=60)
                try:
                    upstream.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in self.headers.items():
                        if name.lower() not in HOP_BY_HOP:
                            upstream.putheader(name, value)
                    if "content-length" not in {n.lower() for n in self.headers}:
                        upstream.putheader("Content-Length", str(len(body)))
                    upstream.endheaders(body)
                    answer = upstream.getresponse()
                    payload = answer.read()
                finally:
                    upstream.close()
                proxy._record(self, body, answer.status)
                self.send_response_only(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(name, value)
                length = answer.getheader("Content-Length")
                if not (self.command == "HEAD" and length):
                    length = str(len(payload))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    # De-chunk: S3's aws-chunked framing (if any) stays inside, untouched.
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _record(self, handler: BaseHTTPRequestHandler, body: bytes, status: int) -> None:
        parts = urlsplit(handler.path)
        exchange = Exchange(
            method=handler.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in handler.headers.items()},
            body=body,
            status=status,
        )
        with self._lock:
            self.exchanges.append(exchange)

    def start(self) -> RecordingProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
