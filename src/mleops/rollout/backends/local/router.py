"""A small weighted router / shadowing proxy in front of two model servers (local backend).

It plays the part Istio/Ambassador play for a SeldonDeployment or an InferenceService: clients
POST predictions in the plane's wire protocol (:mod:`.wire`: OIP v2 on
``/v2/models/{model}/infer`` by default, Seldon v1 on ``/api/v1.0/predictions``); in ``split`` mode a share ``weight``% of requests goes to the
canary (exactly, by a smooth weighted counter, not by chance), in ``shadow`` mode the champion
answers every request and ``weight``% are mirrored to the canary, whose answer is discarded
but scored on the same rows. A request the canary fails (connection refused, timeout, 5xx, or
a 4xx the champion does not give) is retried on the champion, so clients never see a canary
failure; the failure is counted against the canary.

The router records each answered request's per-row log-likelihoods with a sequence number
(``GET /admin/rows?since=K``): the controller reads them like metrics, and because it keeps
its cursor in its persisted state, a restarted controller reads on from where it stopped.
Its HTTP faces are in :mod:`mleops.rollout.backends.local.http`.
"""

from __future__ import annotations

import collections
import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mleops.rollout.backends.base import MODES
from mleops.rollout.backends.local.wire import SeldonV1, Wire

#: the Seldon v1 prediction path (the v2 one names the model: ``OipV2(model).predict_path``)
PREDICT_PATH = SeldonV1.predict_path


@dataclass
class Upstream:
    url: str
    version: str


@dataclass
class ArmStats:
    """What the guardrails look at, per model version."""

    requests: int = 0
    errors: int = 0  # failures on requests the champion answered (timeouts, 5xx, 4xx)
    error_kinds: collections.Counter = field(default_factory=collections.Counter)
    outside_support: int = 0  # requests refused for rows outside the model's support
    rows: int = 0
    latencies_ms: collections.deque = field(default_factory=lambda: collections.deque(
        maxlen=2000))

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms, float)
        return {"requests": self.requests, "errors": self.errors, "rows": self.rows,
                "error_kinds": dict(self.error_kinds),
                "outside_support": self.outside_support,
                "p99_ms": float(np.percentile(lat, 99)) if lat.size else None}


def _kind(status: int) -> str:
    return {502: "unreachable", 504: "timeout"}.get(status, f"HTTP {status}")


class _Pool:
    """Keep-alive HTTP connections per (thread, upstream)."""

    def __init__(self, timeout: float):
        self.timeout, self.local = timeout, threading.local()

    def post(self, url: str, path: str, body: bytes, headers: dict[str, str]
             ) -> tuple[int, bytes]:
        conns = self.local.__dict__.setdefault("conns", {})
        parts = urllib.parse.urlsplit(url)
        for _ in (1, 2):  # a kept-alive connection the server closed: reconnect once
            reused = url in conns
            conn = conns.get(url)
            if conn is None:
                conn = conns[url] = http.client.HTTPConnection(parts.hostname, parts.port,
                                                               timeout=self.timeout)
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conns.pop(url, None)
                stale = isinstance(e, http.client.RemoteDisconnected | ConnectionResetError
                                   | BrokenPipeError)
                if not (reused and stale):  # timeouts and refusals are not retried here
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


class Router:
    """The routing table, the per-version stats and the record buffer; thread-safe."""

    def __init__(self, champion: Upstream, *, wire: Wire | None = None, timeout: float = 10.0,
                 max_records: int = 200_000, max_body_bytes: int = 8 << 20,
                 shadow_workers: int = 4):
        self.champion, self.canary = champion, None
        self.wire = wire or SeldonV1()
        self.weight, self.mode = 0, "split"
        self.max_body_bytes = max_body_bytes
        self.stats: dict[str, ArmStats] = collections.defaultdict(ArmStats)
        self.records: collections.deque = collections.deque(maxlen=max_records)
        self.next_seq = 0
        self.client_errors = 0
        self.hooks: dict[str, Callable[..., Any]] = {}
        self._acc = 0
        self._lock = threading.Lock()
        self._pool = _Pool(timeout)
        self._shadow = ThreadPoolExecutor(shadow_workers, thread_name_prefix="mleops-shadow")
        self._backlog = threading.BoundedSemaphore(256)  # a slow shadow sheds, never queues

    # --- configuration ---------------------------------------------------------------------
    def routes(self) -> dict[str, Any]:
        with self._lock:
            return {"champion": asdict(self.champion),
                    "canary": asdict(self.canary) if self.canary else None,
                    "weight": self.weight, "mode": self.mode, "protocol": self.wire.name,
                    "model": self.wire.model}

    def set_routes(self, weight: int, mode: str | None = None) -> dict[str, Any]:
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            raise ValueError(f"weight must be an integer in 0..100, got {weight!r}")
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        with self._lock:
            if weight and self.canary is None:
                raise ValueError("no canary deployed: PUT /admin/canary first")
            self.weight, self.mode = weight, mode or self.mode
        return self.routes()

    def set_canary(self, canary: Upstream | None) -> None:
        """A new (or no) canary starts at 0%: it has not earned any traffic yet."""
        with self._lock:
            if canary != self.canary:
                self.weight = 0
            self.canary = canary

    def promote(self) -> Upstream:
        """The canary becomes the champion (all traffic); returns the retired champion."""
        with self._lock:
            if self.canary is None:
                raise ValueError("no canary to promote")
            old, self.champion, self.canary, self.weight = self.champion, self.canary, None, 0
            return old

    # --- traffic ---------------------------------------------------------------------------
    def _pick(self) -> tuple[Upstream, Upstream | None, bool]:
        """(upstream that answers, upstream to mirror to or None, answered by the canary?)."""
        with self._lock:
            champion, canary, weight, mode = self.champion, self.canary, self.weight, self.mode
            self._acc += weight if canary else 0
            hit = self._acc >= 100
            if hit:
                self._acc -= 100
        if not hit:
            return champion, None, False
        return (champion, canary, False) if mode == "shadow" else (canary, None, True)

    def _call(self, up: Upstream, body: bytes, headers) -> tuple[int, bytes, float]:
        t0 = time.perf_counter()
        try:
            status, out = self._pool.post(up.url, self.wire.predict_path, body, headers)
        except TimeoutError:
            status, out = 504, self._gateway_error(504, f"model version {up.version} timed out")
        except (OSError, http.client.HTTPException) as e:  # no internal address to clients
            status, out = 502, self._gateway_error(502, f"model version {up.version} "
                                                        f"unavailable ({type(e).__name__})")
        return status, out, (time.perf_counter() - t0) * 1e3

    def _gateway_error(self, status: int, message: str) -> bytes:
        return json.dumps(self.wire.error(status, message, "MLEOPS_UPSTREAM")).encode()

    def forward_get(self, path: str) -> tuple[int, bytes]:
        """A metadata GET (e.g. OIP's model metadata) answered by the champion's server."""
        with self._lock:
            up = self.champion
        parts = urllib.parse.urlsplit(up.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self._pool.timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as e:
            return 502, self._gateway_error(502, f"model version {up.version} unavailable "
                                                 f"({type(e).__name__})")
        finally:
            conn.close()

    def _account(self, version: str, status: int, out: bytes, ms: float, *,
                 fault: bool) -> list[float] | None:
        rows = self.wire.loglik_rows(out) if status == 200 else None
        if status == 200 and rows is None and b'"loglik"' in out:
            fault = True  # a loglik answer without finite numbers is the model's fault
        with self._lock:
            s = self.stats[version]
            s.requests += 1
            s.latencies_ms.append(ms)
            if fault:
                if b"outside the support" in out:
                    s.outside_support += 1
                else:
                    s.errors += 1
                    s.error_kinds[_kind(status)] += 1
            if rows is not None:
                s.rows += len(rows)
        return rows

    def count_client_error(self) -> None:
        """A request refused before routing (malformed): neither version saw it."""
        with self._lock:
            self.client_errors += 1

    def _record(self, **arms: Any) -> None:
        with self._lock:
            self.records.append({"seq": self.next_seq, "t": round(time.time(), 3), **arms})
            self.next_seq += 1

    def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Answer one prediction request (what the client sees)."""
        first, mirror, is_canary = self._pick()
        status, out, ms = self._call(first, body, headers)
        answered = first
        if is_canary and status != 200:  # the client must not see a canary failure
            with self._lock:
                answered = self.champion
            c_status, c_out, c_ms = status, out, ms
            status, out, ms = self._call(answered, body, headers)
            # the canary is at fault only where the champion succeeds on the same request:
            # a request both refuse (a client error, or a fault they share) is no evidence
            self._account(first.version, c_status, c_out, c_ms, fault=status == 200)
            is_canary = False
        rows = self._account(answered.version, status, out, ms, fault=False)
        if status >= 400:
            with self._lock:
                self.client_errors += 1
        if mirror is not None and rows is not None and self._backlog.acquire(blocking=False):
            self._shadow.submit(self._mirror, mirror, answered.version, rows, body, headers)
        elif rows is not None:
            self._record(**({"canary": rows, "canary_version": answered.version} if is_canary
                            else {"champion": rows, "champion_version": answered.version}))
        return status, out

    def _mirror(self, canary: Upstream, champion_version: str, champion_rows, body, headers):
        try:
            status, out, ms = self._call(canary, body, headers)
        finally:
            self._backlog.release()
        rows = self._account(canary.version, status, out, ms, fault=status != 200)
        if rows is not None and len(rows) == len(champion_rows):
            self._record(canary=rows, champion=champion_rows, canary_version=canary.version,
                         champion_version=champion_version, paired=True)
        else:
            self._record(champion=champion_rows, champion_version=champion_version)

    def read(self, since: int, limit: int = 5000) -> dict[str, Any]:
        with self._lock:
            oldest = self.records[0]["seq"] if self.records else self.next_seq
            start = max(since, oldest)
            skip = start - oldest
            out = [self.records[i] for i in range(skip, min(len(self.records), skip + limit))]
            return {"records": out, "next": start + len(out), "lost": start - since,
                    "head": self.next_seq}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            stats = {v: s.summary() for v, s in self.stats.items()}
            client_errors = self.client_errors
        return {**self.routes(), "stats": stats, "client_errors": client_errors,
                "records": self.next_seq}

    def close(self) -> None:
        self._shadow.shutdown(wait=True, cancel_futures=True)


__all__ = ["ArmStats", "Router", "Upstream", "MODES", "PREDICT_PATH"]
