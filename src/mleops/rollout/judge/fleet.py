"""The judge for fleets: per-key decisions, one verdict for the service as a whole.

When Argo Rollouts or Flagger moves the traffic of a fleet's canary, they need one answer
for the whole service, while the evidence is per key. For each (model, canary, champion)
the judge keeps the per-key e-processes of a fleet rollout
(:class:`~mleops.rollout.kernels.fleet.FleetEvidence`, e-BH across keys at ``fdr``) fed from
the fleet canary server's counters (``GET /v2/models/{model}/evidence``, at the URL the
operator configured: a caller never names where the judge reads), one block per tick (faster
polls get the last answer, as for one model). The verdict:

* ``rollback`` once the rolled-back share of keys exceeds ``max_rollback_share`` (final);
* ``promote`` once every key is decided with at most that share rolled back (final);
* ``continue`` otherwise, with the per-key counts and the worst keys (by index in the
  candidate's table) in the answer, always JSON.

State per analysis is O(keys) numbers, a JSON file in ``state_dir/fleets`` (atomic replace),
so a restarted judge resumes. Split traffic is judged unpaired (``FleetConfig.mode``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from mleops.errors import DataError, MleopsError
from mleops.rollout.backends.fleet_server import FleetServer
from mleops.rollout.judge.core import JudgeFull, check_key
from mleops.rollout.kernels.fleet import NAMES, FleetConfig, FleetEvidence
from mleops.rollout.state.store import write_json_atomic
from mleops.serving.fleet_tally import advance, increment

FINAL = ("promote", "rollback")


class FleetJudge:
    """Fleet verdicts from the counters at ``evidence_url`` (``{model}`` filled in)."""

    def __init__(self, evidence_url: str, *, config: FleetConfig | None = None,
                 max_rollback_share: float = 0.1, min_interval_s: float = 10.0,
                 state_dir: str | None = None, max_analyses: int = 100,
                 clock: Callable[[], float] = time.time):
        if "{model}" not in evidence_url:
            raise DataError("the fleet evidence URL needs a {model} placeholder, e.g. "
                            "http://{model}-predictor.models/v2/models/{model}/evidence")
        if not 0 <= max_rollback_share < 1:
            raise DataError(f"max_rollback_share must be in [0, 1), got {max_rollback_share}")
        self.evidence_url, self.config = evidence_url, config or FleetConfig()
        self.max_share, self.min_interval_s = float(max_rollback_share), float(min_interval_s)
        # beside the single-model analyses, in a folder of its own (they read every *.json)
        self.dir = os.path.join(os.path.abspath(state_dir), "fleets") if state_dir else None
        self.max_analyses, self.clock = int(max_analyses), clock
        self._docs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}

    def _path(self, key: tuple[str, str, str]) -> str:
        return os.path.join(self.dir, "fleet@" + "@".join(key) + ".json")

    def _doc(self, key: tuple[str, str, str]) -> tuple[dict[str, Any] | None, threading.Lock]:
        with self._lock:
            if key not in self._docs and self.dir and os.path.exists(self._path(key)):
                try:
                    with open(self._path(key)) as f:
                        self._docs[key] = json.load(f)
                except (OSError, ValueError) as e:
                    raise DataError(f"fleet judge state {self._path(key)} is unreadable ({e})"
                                    ": move it away to start afresh") from None
            if key not in self._docs and len(self._docs) >= self.max_analyses:
                ended = [k for k, d in self._docs.items() if d["answer"].get("decision") in FINAL]
                if not ended:
                    raise JudgeFull(f"{len(self._docs)} fleet analyses are running (the limit)")
                del self._docs[ended[0]]
            return self._docs.get(key), self._locks.setdefault(key, threading.Lock())

    def judge(self, model: str, canary: str, champion: str) -> dict[str, Any]:
        """The fleet's verdict: a new tick when the last is ``min_interval_s`` old."""
        key = check_key(model, canary, champion)
        doc, lock = self._doc(key)
        with lock:
            doc = self._docs.get(key, doc)
            now = self.clock()
            if doc is not None and (doc["answer"].get("decision") in FINAL
                                    or now - doc["ticked_at"] < self.min_interval_s):
                return {**doc["answer"], "cached": True}
            doc = self._tick(key, doc, now)
            with self._lock:
                self._docs[key] = doc
            if self.dir:
                os.makedirs(self.dir, exist_ok=True)
                write_json_atomic(self._path(key), doc)
            return {**doc["answer"], "cached": False}

    def _tick(self, key, doc, now: float) -> dict[str, Any]:
        model, canary, _ = key
        server = FleetServer(self.evidence_url.format(model=model), "")
        try:
            snap = server.read(doc["keys"] if doc else None, canary)
        except MleopsError as e:  # unreachable or not this canary: no evidence, say why
            if doc is None:
                raise
            doc = {**doc, "ticked_at": now}
            doc["answer"] = {**doc["answer"], "reason": f"no evidence this tick: {e}"}
            return doc
        if doc is None:  # the first read starts the cursor: earlier traffic does not count
            ev = FleetEvidence(int(snap["keys"]), self.config)
            doc = {"keys": int(snap["keys"]), "evidence": ev.to_dict(), "applied": snap,
                   "started_at": now, "ticked_at": now, "ticks": 0}
            return {**doc, "answer": self._answer(key, ev, 0, "started: counting from now")}
        ev = FleetEvidence.from_dict(doc["evidence"])
        ev.update_counters(increment(snap, doc["applied"]))
        doc = {**doc, "evidence": ev.to_dict(), "applied": advance(snap, doc["applied"]),
               "ticked_at": now,
               "ticks": doc["ticks"] + 1}
        doc["answer"] = self._answer(key, ev, doc["ticks"], "")
        return doc

    def _answer(self, key, ev: FleetEvidence, ticks: int, reason: str) -> dict[str, Any]:
        counts = ev.counts()
        share = counts["rollback"] / max(ev.k, 1)
        if share > self.max_share:
            decision = "rollback"
            reason = reason or (f"{counts['rollback']} of {ev.k} keys worse ({share:.1%} > "
                                f"{self.max_share:.1%})")
        elif counts["undecided"] == 0:
            decision = "promote"
            reason = reason or f"every key decided; {counts['rollback']} rolled back"
        else:
            decision = "continue"
            reason = reason or f"{counts['undecided']} of {ev.k} keys undecided"
        a, drop = ev.a, ev.stopped_log_drop().tolist()
        worst = sorted(range(ev.k), key=lambda i: -drop[i])[:10]
        return {"model": key[0], "canary": key[1], "champion": key[2], "decision": decision,
                "reason": reason, "counts": counts, "keys": ev.k,
                "rolled_back_share": share, "max_rollback_share": self.max_share,
                "fdr": ev.config.fdr, "ticks": ticks,
                "worst_keys": [{"key_index": i, "decision": NAMES[int(a["decision"][i])],
                                "log_e_drop": drop[i]} for i in worst]}


__all__ = ["FleetJudge"]
