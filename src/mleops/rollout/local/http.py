"""The router's HTTP face: the Seldon prediction path plus a small admin API.

Admin endpoints (bound to 127.0.0.1 like everything else, and refusing other Host headers and
non-JSON requests): ``GET/PUT /admin/routes``, ``GET /admin/stats``, ``GET /admin/rows``,
``PUT/DELETE /admin/canary`` and ``POST /admin/promote`` (the last three call hooks the data
plane provides: starting a model server is not the router's business).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mleops.rollout.local.router import PREDICT_PATH, Router

DRAIN_LIMIT = 64 << 20  # bytes of an oversize body read and dropped before answering 413


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    router: Router

    def log_message(self, *args) -> None:  # quiet: the router is on the request path
        pass

    def _send(self, status: int, payload: bytes | dict) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(411, {"error": "send a Content-Length body (no Transfer-Encoding)"})
            return None
        raw = self.headers.get("Content-Length") or "0"
        if not raw.isdigit():
            self.close_connection = True
            self._send(400, {"error": f"bad Content-Length {raw!r}"})
            return None
        n = int(raw)
        if n > self.router.max_body_bytes:
            # read (and drop) what a client may still be sending, up to a bound, so that it
            # gets the 413 rather than a connection reset; then close
            left = min(n, DRAIN_LIMIT)
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)
            self._send(413, {"error": f"body of {n} bytes exceeds the limit of "
                                      f"{self.router.max_body_bytes}"})
            self.close_connection = True
            return None
        return self.rfile.read(n)

    def _json(self) -> dict | None:
        body = self._body()
        if body is None:
            return None
        try:
            doc = json.loads(body or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
            return doc
        except ValueError as e:
            self._send(400, {"error": f"malformed JSON: {e}"})
            return None

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        r = self.router
        try:
            if url.path in ("/health", "/health/status", "/health/ping"):
                self._send(200, {"ready": True})
            elif url.path == "/admin/routes":
                self._send(200, r.routes())
            elif url.path == "/admin/stats":
                self._send(200, r.snapshot())
            elif url.path == "/admin/rows":
                self._send(200, r.read(int(q.get("since", ["0"])[0]),
                                       min(int(q.get("limit", ["5000"])[0]), 50_000)))
            else:
                self._send(404, {"error": f"no route {url.path}"})
        except ValueError as e:
            self._send(400, {"error": str(e)})

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == PREDICT_PATH:
            if (body := self._body()) is not None:
                headers = {"Content-Type": self.headers.get("Content-Type",
                                                            "application/json")}
                self._send(*self.router.handle(body, headers))
        elif path == "/admin/promote":
            if self._body() is not None and self._admin_allowed():
                self._admin("promote")
        else:
            self._send(404, {"error": f"no route {path}"})

    def do_PUT(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if (doc := self._json()) is None or not self._admin_allowed():
            return
        if path == "/admin/routes":
            try:
                self._send(200, self.router.set_routes(doc.get("weight"), doc.get("mode")))
            except ValueError as e:
                self._send(400, {"error": str(e)})
        elif path == "/admin/canary":
            self._admin("deploy_canary", str(doc.get("version", "")))
        else:
            self._send(404, {"error": f"no route {path}"})

    def do_DELETE(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/admin/canary":
            if self._body() is not None and self._admin_allowed():
                self._admin("remove_canary")
        else:
            self._send(404, {"error": f"no route {path}"})

    def _admin_allowed(self) -> bool:
        """Admin calls must name this host (no DNS rebinding) and carry JSON (no cross-site
        form posts from a browser on this machine)."""
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1", self.server.server_address[0]):
            self._send(403, {"error": f"admin API refuses Host {host!r}"})
            return False
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            self._send(415, {"error": "admin API needs Content-Type: application/json"})
            return False
        return True

    def _admin(self, hook: str, *args) -> None:
        fn = self.router.hooks.get(hook)
        if fn is None:
            self._send(501, {"error": f"this router cannot {hook.replace('_', ' ')}"})
            return
        try:
            self._send(200, fn(*args) or self.router.routes())
        except ValueError as e:
            self._send(400, {"error": str(e)})
        except Exception as e:  # a model server that does not start: 502, router stays up
            self._send(502, {"error": f"{type(e).__name__}: {e}"})


class RouterServer(ThreadingHTTPServer):
    """The router on ``host:port`` (127.0.0.1 by default; port 0 picks a free one)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 0):
        handler = type("Handler", (_Handler,), {"router": router})
        super().__init__((host, port), handler)
        self.router = router
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RouterServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True,
                                        name="mleops-router")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.router.close()


__all__ = ["RouterServer"]
