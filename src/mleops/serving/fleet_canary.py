"""A fleet canary inside one server: the candidate version's table beside the champion's,
routed per key.

Traffic between deployments (a router's split, an InferenceService's canary percentage) is
per request, never per key, and a fleet's decisions are per key. So the server that holds
both tables decides: the rows of key ``k`` in request ``r`` go to the candidate when
``blake2b(k, r) mod 100 < weight``. Deterministic (a retried request with its id goes the
same way), and all rows of one key in one request share an arm, so a request stays one
unit of evidence. In ``shadow`` mode the champion answers every row and the routed share is
scored under the candidate as well (paired evidence on the same rows).

Each answered row carries its arm: 1 candidate, 0 champion, -1 a key only one of the two
tables can answer (a new key, or one the other could not fit): no comparison, no evidence.

The routing is a small JSON file (``{"weight": 10, "mode": "split", "held": [3, 17]}``:
``held`` are keys, by their row in the candidate's table, a rollout has already rolled back,
so the candidate answers none of their rows; ``promoted``, keys it has already promoted, so
the candidate answers all of their rows, in either mode, as evidence for neither arm: they
are decided) read again whenever
it changes (one ``stat`` per request): the local data plane replaces it atomically; on a
cluster it is a mounted ConfigMap, which the kubelet updates in place without a restart. A
missing or unreadable file routes nothing to the candidate (fail safe: the champion answers).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass

import numpy as np

from mleops.atomic import write_json_atomic
from mleops.errors import DataError
from mleops.fleet_artifact import FleetArtifact, key_labels

ARM_CHAMPION, ARM_CANARY, ARM_NONE = 0, 1, -1
MODES = ("split", "shadow")


@dataclass(frozen=True)
class Routing:
    """The candidate's share of each key's requests (percent) and how it is used."""

    weight: int = 0
    mode: str = "split"
    held: tuple[int, ...] = ()  # key indices (the candidate's rows) kept on the champion
    promoted: tuple[int, ...] = ()  # key indices answered by the candidate only

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or \
                not 0 <= self.weight <= 100:
            raise DataError(f"routing weight must be an integer in 0..100, got {self.weight!r}")
        if self.mode not in MODES:
            raise DataError(f"routing mode must be one of {list(MODES)}, got {self.mode!r}")
        for what, keys in (("held", self.held), ("promoted", self.promoted)):
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                       for i in keys):
                raise DataError(f"routing {what} must be a list of key indices "
                                f"(integers >= 0)")
        if set(self.held) & set(self.promoted):
            raise DataError("routing: a key cannot be both held and promoted")

    def to_dict(self) -> dict:
        return {"weight": self.weight, "mode": self.mode, "held": list(self.held),
                "promoted": list(self.promoted)}

    @classmethod
    def from_dict(cls, doc: dict) -> Routing:
        if not isinstance(doc, dict):
            raise DataError("routing must be a JSON object")
        held, promoted = doc.get("held", []), doc.get("promoted", [])
        if not isinstance(held, list) or not isinstance(promoted, list):
            raise DataError("routing held and promoted must be lists of key indices")
        return cls(weight=doc.get("weight", 0), mode=doc.get("mode", "split"),
                   held=tuple(held), promoted=tuple(promoted))


def write_routing(path: str, routing: Routing) -> None:
    """Replace the routing file atomically (a reader sees the old or the new one)."""
    write_json_atomic(path, routing.to_dict())


class RoutingFile:
    """The routing in ``path``, re-read when its modification time or size changes."""

    def __init__(self, path: str):
        self.path = path
        self._seen: object = ()  # never a stat result: the first call reads
        self._routing = Routing()
        self._lock = threading.Lock()
        self.error = ""  # why the file was not taken (it then routes nothing)

    def current(self) -> Routing:
        try:
            st = os.stat(self.path)
            seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            seen = None
        with self._lock:
            if seen != self._seen:
                self._seen = seen
                self._routing, self.error = self._read(seen)
            return self._routing

    def _read(self, seen) -> tuple[Routing, str]:
        if seen is None:
            return Routing(), f"no routing file at {self.path}"
        try:
            with open(self.path) as f:
                return Routing.from_dict(json.load(f)), ""
        except (OSError, ValueError, DataError) as e:
            return Routing(), f"routing file {self.path} refused: {e}"


def routed(labels: np.ndarray, request_id: str, weight: int) -> np.ndarray:
    """Per row: does the candidate answer it? One hash per distinct key of the request."""
    if weight <= 0 or labels.size == 0:
        return np.zeros(labels.shape, bool)
    if weight >= 100:
        return np.ones(labels.shape, bool)
    uniq, inv = np.unique(labels.astype(str), return_inverse=True)
    rid = str(request_id).encode()
    hit = np.array([int.from_bytes(hashlib.blake2b(k.encode() + b"\x1f" + rid,
                                                   digest_size=8).digest(), "big") % 100
                    < weight for k in uniq], bool)
    return hit[inv]


@dataclass
class CanaryAnswer:
    """What the server answers (``loglik``), which arm each row is evidence for, the row's
    key as its position in the candidate's table (-1: not there; the per-key evidence's
    index), which rows the candidate answered, and in shadow mode each row's log-likelihood
    under the candidate (the champion's where not mirrored)."""

    loglik: np.ndarray
    arm: np.ndarray
    key_index: np.ndarray
    by_candidate: np.ndarray
    loglik_canary: np.ndarray | None = None


def check_pair(champion: FleetArtifact, candidate: FleetArtifact) -> FleetArtifact:
    """``candidate``, if it can be a canary of ``champion`` (same family and keys)."""
    if candidate.family != champion.family or candidate.key_names != champion.key_names:
        raise DataError(f"a fleet canary must be the same family and keys as its champion: "
                        f"{candidate.family} by {candidate.key_names} against "
                        f"{champion.family} by {champion.key_names}")
    return candidate


def score(champion: FleetArtifact, candidate: FleetArtifact, x: np.ndarray, keys: list,
          *, request_id: str, routing: Routing, event=None) -> CanaryAnswer:
    """Per-row log-likelihoods of one request under the routing; a key neither table can
    answer is refused as the champion refuses it (or answered by its pooled fit)."""
    from mleops.fleet_kernel import keyed_loglik

    check_pair(champion, candidate)
    x = np.asarray(x, np.float64)
    ev = None if event is None else np.asarray(event, np.float64)
    at_p, at_c = champion.positions(keys), candidate.positions(keys)
    both, only_c = (at_p >= 0) & (at_c >= 0), (at_p < 0) & (at_c >= 0)
    # keys already promoted: the candidate answers them (no evidence: they are decided)
    prom = both & np.isin(at_c, routing.promoted) if routing.promoted \
        else np.zeros(x.size, bool)
    both = both & ~prom
    hit = both & routed(key_labels(keys), request_id, routing.weight)
    if routing.held:  # keys already rolled back: the champion answers them, no evidence
        hit &= ~np.isin(at_c, routing.held)
    shadow = routing.mode == "shadow"
    only_c = only_c | prom  # answered by the candidate alone
    to_c = hit | only_c
    to_p = ~only_c if shadow else ~to_c
    ll_p, ll_c = np.zeros(x.size), np.zeros(x.size)

    def under(art: FleetArtifact, at: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return keyed_loglik(art.family, art.row_params(at), x[rows],
                            event=None if ev is None else ev[rows])

    if to_p.any():
        at = at_p[to_p]
        if (at < 0).any():  # keys neither table has: the champion's refusal (or pooled fit)
            lost = to_p & (at_p < 0)
            at[at < 0] = champion.rows_of([np.asarray(k)[lost] for k in keys])
        ll_p[to_p] = under(champion, at, to_p)
    if to_c.any():
        ll_c[to_c] = under(candidate, at_c[to_c], to_c)
    arm = np.where(hit, ARM_CANARY, np.where(both, ARM_CHAMPION, ARM_NONE))
    if shadow:
        return CanaryAnswer(np.where(only_c, ll_c, ll_p), arm, at_c, only_c,
                            np.where(hit, ll_c, ll_p))
    return CanaryAnswer(np.where(to_c, ll_c, ll_p), arm, at_c, to_c)


__all__ = ["ARM_CANARY", "ARM_CHAMPION", "ARM_NONE", "CanaryAnswer", "Routing", "RoutingFile",
           "check_pair", "routed", "score", "write_routing"]
