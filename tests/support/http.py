"""One raw HTTP exchange with a server on 127.0.0.1, whatever it answers (hostile-input tests)."""

from __future__ import annotations

import http.client
import json


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
