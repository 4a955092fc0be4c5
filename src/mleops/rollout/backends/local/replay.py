"""Replay observations from a file through the router at a fixed request rate.

So that a whole rollout runs unattended on one machine (tests, the demo, a dry run before a
real one): an open-loop sender in a thread, cycling through the file's rows in batches, that
counts every answer a client would have seen.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter

import numpy as np

from mleops.errors import DataError
from mleops.io import column, read_table
from mleops.rollout.backends.local.wire import SeldonV1, Wire
from mleops.rollout.backends.local.wire import wire as wire_for


def load_rows(path: str, columns: list[str] | None = None,
              covariates: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(rows, names) to send, named as the model server takes them: ``x`` (the response),
    the model's ``covariates`` by name, and ``event`` when the file has it.

    The response is the first of ``columns`` when given, else the file's ``x``, else its one
    numeric column that is neither a covariate nor ``event`` (a file's own column names, e.g.
    ``latency_ms``, were once sent as they were and every request was refused)."""
    table = read_table(path)
    covariates = [c for c in (covariates or []) if c != "const"]
    numeric = [n for n, a in table.items() if a.dtype.kind in "iuf"]
    if columns:
        response, extra = columns[0], list(columns[1:])
    elif "x" in table:
        response, extra = "x", []
    else:
        candidates = [n for n in numeric if n not in covariates and n != "event"]
        if len(candidates) != 1:
            raise DataError(f"{path}: which column is the response? numeric columns "
                            f"{candidates} (pass --columns RESPONSE)")
        response, extra = candidates[0], []
    missing = [c for c in (response, *covariates, *extra) if c not in table]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; it has {sorted(table)}")
    sent = [response, *covariates, *[c for c in extra if c not in covariates]]
    if "event" in table and "event" not in sent:
        sent.append("event")
    names = ["x", *sent[1:]]
    return np.column_stack([column(table, n) for n in sent]), names


class Replayer:
    """Sends ``rows`` in batches of ``batch`` to ``url`` at ``rate`` requests/s until stopped,
    in the ``wire`` protocol of the plane (:meth:`for_plane` asks the router which)."""

    def __init__(self, url: str, rows: np.ndarray, names: list[str], *, rate: float = 20.0,
                 batch: int = 20, timeout: float = 30.0, wire: Wire | None = None):
        if not rate > 0 or batch < 1:
            raise DataError(f"replay needs rate > 0 and batch >= 1, got {rate}, {batch}")
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise DataError("nothing to replay")
        self.url, self.rows, self.names = url, rows, names
        self.wire = wire or SeldonV1()
        self.rate, self.batch, self.timeout = float(rate), int(batch), timeout
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="mleops-replay")

    @classmethod
    def for_plane(cls, url: str, rows: np.ndarray, names: list[str], **kw) -> Replayer:
        """A replayer speaking whatever protocol the data plane at ``url`` speaks (its health
        answer says which, and for which model)."""
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=10) as r:
                said = json.loads(r.read())
        except (OSError, ValueError) as e:
            raise DataError(f"no data plane answers at {url}: {e}") from e
        return cls(url, rows, names, **kw,
                   wire=wire_for(said.get("protocol", "v1"), said.get("model", "")))

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200)

    def start(self) -> Replayer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        i, due = 0, time.monotonic()
        while not self._stop.is_set():
            rows = self.rows.take(range(i, i + self.batch), axis=0, mode="wrap")
            i = (i + self.batch) % self.rows.shape[0]
            body = json.dumps(self.wire.request(self.names, rows)).encode()
            try:
                conn.request("POST", self.wire.predict_path, body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                text = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                status, text = 599, str(e).encode()
            self.statuses[status] += 1
            if status != 200 and len(self.failures) < 20:
                self.failures.append(f"HTTP {status}: {text[:300]!r}")
            due += 1.0 / self.rate
            self._stop.wait(max(0.0, due - time.monotonic()))
        conn.close()

    def __enter__(self) -> Replayer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["Replayer", "load_rows"]
