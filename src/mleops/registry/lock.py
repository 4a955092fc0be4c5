"""One writer per registered model at a time, with nothing but the MLflow API.

MLflow has no compare-and-set on aliases or tags, so two pipeline runs registering at once
both saw "no champion" and both took it, and two promotes lost one of their updates. This is
Fischer's timed mutual exclusion on a registered-model tag (``mleops.lock``): read the tag;
if it is free (absent or expired), write a fresh token, wait ``settle_s``, read again, and
proceed only if the token is still ours. It is safe whenever every contender's time from
sending its read to receiving its write's answer stays under ``settle_s`` (then any write it
makes lands before the confirming read of whoever wrote after its read), and each contender
checks that of itself against ``0.9 * settle_s``: an attempt slower than that never proceeds
(its token then blocks others until it expires: slow, never unsafe). A holder that dies leaves a lock that expires after ``lease_s``.
Expiry compares wall clocks: hosts must agree to well within ``lease_s`` (NTP does).
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from mleops.registry.session import RegistryError, error_code, unreachable

LOCK_TAG = "mleops.lock"
SETTLE_S = float(os.environ.get("MLEOPS_REGISTRY_SETTLE_S", "0.5"))
LEASE_S = 60.0
WAIT_S = 300.0


def json_tag(rm, key: str) -> dict | None:
    """A registered model's tag holding a JSON object, or None (absent or not an object)."""
    try:
        doc = json.loads(rm.tags.get(key, "null"))
    except (TypeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _read(registry, name: str) -> dict | None:
    return json_tag(registry._call(registry.client.get_registered_model, name), LOCK_TAG)


def ensure_model(registry, name: str) -> bool:
    """Create the registered model if it does not exist (the lock lives on it); True if made."""
    if registry._model(name) is not None:
        return False
    try:
        registry._call(registry.client.create_registered_model, name)
        return True
    except Exception as e:  # somebody created it meanwhile
        if error_code(e) != "RESOURCE_ALREADY_EXISTS":
            raise
        return False


@contextmanager
def model_lock(registry, name: str, *, settle_s: float = SETTLE_S, lease_s: float = LEASE_S,
               wait_s: float = WAIT_S) -> Iterator[str]:
    """Hold the model's lock for the ``with`` block (its token is yielded)."""
    deadline = time.monotonic() + wait_s
    holder = None
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        cur = _read(registry, name)
        if cur and cur.get("until", 0) > time.time():
            holder = cur
            time.sleep(random.uniform(0.05, 0.25))
            continue
        token = {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                 "until": time.time() + lease_s}
        try:
            registry._call(registry.client.set_registered_model_tag, name, LOCK_TAG,
                           json.dumps(token))
        except Exception as e:  # a concurrent write of the same tag (a unique violation)
            if unreachable(e) or error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                raise
            time.sleep(random.uniform(0.05, 0.25))
            continue
        if time.monotonic() - t0 > 0.9 * settle_s:
            continue  # too slow to be sure nobody wrote in between: never proceed on it
        time.sleep(settle_s)
        cur = _read(registry, name)
        if cur and cur.get("token") == token["token"]:
            try:
                yield token["token"]
            finally:
                _release(registry, name, token["token"])
            return
        holder = cur
    raise RegistryError(f"model {name!r} stayed locked for {wait_s:.0f} s by "
                        f"{_who(holder)}: another registration or promotion is running (or "
                        f"died: its lock expires {lease_s:.0f} s after it was taken)")


def _who(holder: dict | None) -> str:
    if not holder:
        return "another writer"
    return f"pid {holder.get('pid')} on {holder.get('host')}"


def _release(registry, name: str, token: str) -> None:
    try:
        cur = _read(registry, name)
        if cur and cur.get("token") == token:
            registry._quietly(registry.client.delete_registered_model_tag, name, LOCK_TAG)
    except Exception:  # an unreleased lock expires by itself
        pass


__all__ = ["LOCK_TAG", "ensure_model", "json_tag", "model_lock"]
