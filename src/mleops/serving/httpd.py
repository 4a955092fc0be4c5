"""The small HTTP servers mleops runs itself (the local router's two faces, the judge): a JSON
handler that reads exact, bounded bodies under a read timeout and checks the Host header, and
a threading server with a bounded number of connections (beyond: 503 and close).

Here, below the rollout, because both the router and the judge build on it; the model servers
are seldon-core's and KServe's own.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mleops.serving.guard import READ_TIMEOUT_S, host_allowed, status_body

DRAIN_LIMIT = 64 << 20  # bytes of an oversize body read and dropped before answering 413
MAX_CONNECTIONS = 256


class JsonHandler(BaseHTTPRequestHandler):
    """JSON answers, exact Content-Length bodies bounded by ``max_body_bytes``, a read
    timeout, and a loopback Host check: what every small mleops HTTP face needs."""


    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_S  # the socket's read timeout (idle keep-alive and slow bodies)
    max_body_bytes: int = 1 << 20  # a subclass sets its own bound (the router: its own)

    def log_message(self, *args) -> None:  # quiet: the router is on the request path
        pass

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _send(self, status: int, payload: bytes | dict) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes | None:
        """The exact body, or None after answering why not (and closing the connection)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._error(411, "send a Content-Length body (no Transfer-Encoding)")
            return None
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not (raw.isascii() and raw.isdigit()):
            self.close_connection = True
            self._error(400, f"bad Content-Length {raw!r}")
            return None
        n = int(raw)
        if n > self.max_body_bytes:
            # read (and drop) what a client may still be sending, up to a bound, so that it
            # gets the 413 rather than a connection reset; then close
            left = min(n, DRAIN_LIMIT)
            try:
                while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                    left -= len(chunk)
            except OSError:
                pass
            self.close_connection = True
            self._error(413, f"request body of {n} bytes exceeds the limit of "
                             f"{self.max_body_bytes}")
            return None
        try:
            body = self.rfile.read(n)
        except TimeoutError:
            self.close_connection = True
            self._error(408, f"request body not received within {self.timeout:g} s")
            return None
        if len(body) != n:
            self.close_connection = True
            self._error(400, f"body is {len(body)} bytes, shorter than its Content-Length {n}")
            return None
        return body

    def _host_ok(self) -> bool:
        if host_allowed(self.headers.get("Host"), self.server.server_address[0]):
            return True
        self._error(403, f"Host header {self.headers.get('Host')!r} refused: bound to "
                         "loopback")
        return False


class BoundedServer(ThreadingHTTPServer):
    """At most ``MAX_CONNECTIONS`` connections at once; beyond, a 503 and close."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops connections under a burst

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            body = json.dumps(status_body(503, "too many connections")).encode()
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                                b"Content-Type: application/json\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


__all__ = ["BoundedServer", "DRAIN_LIMIT", "JsonHandler", "MAX_CONNECTIONS"]
