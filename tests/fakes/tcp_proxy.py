"""A loopback TCP forwarder that can be switched off: an outage of whatever sits behind it.

proxy = OutageProxy(target_port).start(); proxy.url   # "http://127.0.0.1:PORT"
proxy.down = True    # new connections are reset, open ones are cut
proxy.down = False   # traffic flows again
proxy.hang = True    # a blackhole: connections are accepted and never answered (open ones cut)
OutageProxy(target_port, source_address="127.0.0.2")   # traffic from another loopback address
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class OutageProxy:
    def __init__(
        self, target_port: int, host: str = "127.0.0.1", source_address: str | None = None
    ) -> None:
        self.target = (host, target_port)
        # The address its upstream connections come from (e.g. 127.0.0.2: another client).
        self.source = (source_address, 0) if source_address else None
        self._listener = socket.create_server((host, 0))
        self._down = False
        self._hang = False
        self._held: list[socket.socket] = []  # accepted while hanging, never answered
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.refused = 0

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        self._down = value
        if value:
            with self._lock:
                sockets, self._open = self._open, set()
            for sock in sockets:
                _close(sock)

    @property
    def hang(self) -> bool:
        return self._hang

    @hang.setter
    def hang(self, value: bool) -> None:
        self._hang = value
        with self._lock:
            cut = self._open if value else self._held
            if value:
                self._open = set()
            else:
                self._held = []
        for sock in cut:
            _close(sock)

    def start(self) -> OutageProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        _close(self._listener)
        self.down = True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                self.refused += 1
                # linger 0: the client sees a reset, like a dead endpoint
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                _close(client)
                continue
            if self._hang:
                with self._lock:
                    self._held.append(client)
                continue
            try:
                upstream = socket.create_connection(self.target, source_address=self.source)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with self._lock:
                    self._open.discard(sock)
                _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
