"""Where every benchmark's JSON results go (one writer, so they all look alike)."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, payload: dict[str, Any]) -> str:
    """``payload`` as indented JSON at ``path`` (folders made; unknown objects as strings)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    print(f"wrote {path}", flush=True)
    return path
