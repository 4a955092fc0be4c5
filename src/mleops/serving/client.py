"""Calling a model server over Seldon's REST protocol (what a cluster endpoint speaks too)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def predict(url: str, payload: dict, *, timeout: float = 30.0) -> tuple[int, dict]:
    """POST a Seldon message to ``url``; returns (HTTP status, JSON body)."""
    body = json.dumps(payload).encode()
    req = urllib.request.Request(f"{url.rstrip('/')}/api/v1.0/predictions", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except json.JSONDecodeError:
            return e.code, {"error": text}


__all__ = ["predict"]
