"""HTTP on 127.0.0.1 for tests: one raw exchange with a server, whatever it answers
(hostile-input tests), and the serving side of the API stubs."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer


def send(port: int, method: str, path: str, body: bytes | dict = b"",
         headers: dict | None = None) -> tuple[int, dict]:
    """(status, JSON body, or {"raw": text} when the body is not JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data if method not in ("GET", "HEAD") else None,
                     headers=dict(headers or {}))
        r = conn.getresponse()
        text = r.read()
    finally:
        conn.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, {"raw": text.decode(errors="replace")}


def reply_json(handler, code: int, doc) -> None:
    """Answer ``doc`` as JSON from a ``BaseHTTPRequestHandler``."""
    data = json.dumps(doc).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@contextlib.contextmanager
def serving(handler_class) -> Iterator[ThreadingHTTPServer]:
    """``handler_class`` served on 127.0.0.1 (a free port) in a thread; stopped on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
