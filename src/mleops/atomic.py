"""Files replaced whole or not at all: state a process killed at any line must not tear."""

from __future__ import annotations

import json
import os
import threading
from typing import Any


def write_json_atomic(path: str, doc: Any, indent: int | None = None) -> None:
    """``doc`` at ``path`` or not at all: a process killed mid-write leaves the old file
    (written to a temporary beside it, synced, then renamed over it)."""
    text = json.dumps(doc, indent=indent)  # one shot: the C encoder (json.dump is Python's)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


__all__ = ["write_json_atomic"]
