"""Where a local data plane's admin API is, and the token that opens it.

The router's admin API (move traffic, deploy, promote) listens on its own loopback port,
separate from the data plane clients call, and wants a bearer token generated per data plane.
Both are written to a file only its owner can read (mode 0600 in a 0700 directory:
``$MLEOPS_PLANE_DIR``, default ``~/.mleops/planes``), named after the data plane's address, so
a controller given ``--router http://127.0.0.1:8080`` finds them and a rollout state never
holds the token.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

from mleops.rollout.backends.base import RolloutError

PLANE_DIR_ENV = "MLEOPS_PLANE_DIR"


class PlaneGone(RolloutError):
    """No data plane is recorded at that address (it stopped, or never ran here)."""


def plane_dir() -> Path:
    return Path(os.environ.get(PLANE_DIR_ENV) or Path.home() / ".mleops" / "planes")


def _path(data_url: str) -> Path:
    parts = urllib.parse.urlsplit(data_url)
    return plane_dir() / f"{parts.hostname}-{parts.port}.json"


def write_credentials(data_url: str, admin_url: str, token: str) -> Path:
    """Record the plane's admin address and token, readable by this user only."""
    d = plane_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    path = _path(data_url)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"data": data_url, "admin": admin_url, "token": token, "pid": os.getpid()},
                  f)
    os.replace(tmp, path)
    return path


def read_credentials(data_url: str) -> tuple[str, str]:
    """(admin URL, token) of the data plane at ``data_url``."""
    path = _path(data_url)
    try:
        doc = json.loads(path.read_text())
        return doc["admin"], doc["token"]
    except FileNotFoundError:
        raise PlaneGone(f"no local data plane is recorded for {data_url} (looked for "
                           f"{path}; start one with `mleops rollout serve`, or set "
                           f"${PLANE_DIR_ENV} to where it writes)") from None
    except (ValueError, KeyError, OSError) as e:
        raise RolloutError(f"unreadable data plane record {path}: {e}") from None


def remove_credentials(data_url: str, token: str) -> None:
    """Remove the record if it is still ours (a newer plane on the port may have replaced it)."""
    path = _path(data_url)
    try:
        if json.loads(path.read_text()).get("token") == token:
            path.unlink()
    except (OSError, ValueError):
        pass


__all__ = ["PLANE_DIR_ENV", "PlaneGone", "plane_dir", "read_credentials", "remove_credentials",
           "write_credentials"]
