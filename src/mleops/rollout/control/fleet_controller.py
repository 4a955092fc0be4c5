"""A fleet rollout, live: per-key decisions from one server's counters, kill-safe.

The fleet canary's server (:mod:`mleops.serving.fleet_canary`) routes each key's share of
requests to the candidate's table and counts per key what the e-processes consume
(:mod:`mleops.serving.fleet_tally`). Each tick of :class:`FleetRollout`:

1. reads the counters and writes them into the state file *before* using them (write-ahead:
   a controller killed after the read and resumed applies that same block, so a resumed
   rollout reaches the same per-key decisions as an uninterrupted one on the same traffic);
2. applies the increment since the last applied read as one block of
   :class:`~mleops.rollout.kernels.fleet.FleetEvidence` (e-BH across keys at ``fdr``);
3. saves the state, then writes the routing the state implies: the step's weight, the
   keys already rolled back held on the champion (the candidate answers none of their rows)
   and the keys already promoted on the candidate (it answers all of theirs), so a decided
   key leaves the ramp at once instead of waiting for the whole fleet.
   Routing is always rewritten from the saved state, so a kill between the two is repaired
   by the next tick (or by ``resume``, which writes it first).

The rollout ends when every key is decided or after ``max_ticks`` (undecided keys stay on
the champion): :func:`~mleops.rollout.control.fleet_finish.finish_fleet_rollout` registers the
merged version once (idempotent by rollout id) and moves the champion alias, then the routing
becomes exactly that version's table: weight 100 for the promoted keys (and keys only the
candidate has), every other key held on the champion's table. Registry and traffic then
agree without a restart; redeploying the merged version later changes no answer.

State is O(keys) numbers (the evidence and one read of the counters; the write-ahead read
in a file beside it, applied only if it is for the state's next tick), JSON, atomically
replaced; one controller per rollout at a time (an flock, released by the kernel when the
process dies, however it dies).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from mleops import failpoints
from mleops.errors import DataError, RolloutError
from mleops.rollout.backends.fleet_server import EvidenceUnavailable, FleetServer
from mleops.rollout.kernels.fleet import NAMES, PROMOTE, ROLLBACK, FleetConfig, FleetEvidence
from mleops.rollout.state.store import check_name, write_json_atomic
from mleops.serving.fleet_canary import Routing
from mleops.serving.fleet_tally import advance, increment

RUNNING, FINISHING, DONE, ABORTED = "running", "finishing", "done", "aborted"
SEP = "\x1f"  # joins key labels in the state file (a label holding it stays a list)
HISTORY = 50  # events kept (the evidence itself is the bounded per-key state)


@dataclass
class FleetRolloutState:
    """Everything the next tick needs (JSON)."""

    name: str
    rollout_id: str
    champion_version: str
    candidate_version: str
    labels: list[str]  # the candidate's keys, by evidence index (its table's rows)
    evidence_url: str
    routing_path: str
    config: dict[str, Any]
    steps: list[int] = field(default_factory=lambda: [10, 25, 50])
    ticks_per_step: int = 10
    max_ticks: int = 360
    phase: str = RUNNING
    ticks: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)
    applied: dict[str, Any] | None = None  # the last read applied (the cursor)
    pending: dict[str, Any] | None = None  # a read saved, not yet applied (in .read.json)
    result: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    updated_at: float = 0.0

    def event(self, what: str, **details: Any) -> None:
        self.history = [*self.history, {"t": time.time(), "event": what, **details}][-HISTORY:]

    @property
    def keys(self) -> int:
        return len(self.labels)

    @property
    def weight(self) -> int:
        return self.steps[min(self.ticks // self.ticks_per_step, len(self.steps) - 1)]


def pack(doc: Any) -> Any:
    """``doc`` with every long list of numbers as its float64 bytes in base64 (exact, and a
    tick over 10,000 keys would otherwise spend most of its time printing floats)."""
    if isinstance(doc, dict):
        return {k: pack(v) for k, v in doc.items()}
    if isinstance(doc, np.ndarray):
        return {"f8": base64.b64encode(doc.astype("<f8").tobytes()).decode()}
    if isinstance(doc, list) and len(doc) > 64:
        if isinstance(doc[0], str):  # key labels: one string, if none holds the separator
            try:
                joined = SEP.join(doc)
            except TypeError:
                return doc
            return {"str": joined} if joined.count(SEP) == len(doc) - 1 else doc
        a = np.asarray(doc) if isinstance(doc[0], int | float) else None
        if a is not None and a.ndim == 1 and a.dtype.kind in "fi":
            return {"f8": base64.b64encode(a.astype("<f8").tobytes()).decode()}
    return doc


def unpack(doc: Any) -> Any:
    """:func:`pack` undone (lists of floats again)."""
    if isinstance(doc, dict):
        if set(doc) == {"f8"}:
            return np.frombuffer(base64.b64decode(doc["f8"]), "<f8").tolist()
        if set(doc) == {"str"}:
            return doc["str"].split(SEP)
        return {k: unpack(v) for k, v in doc.items()}
    return doc


class FleetRollout:
    """Drives one fleet rollout kept in ``<state_dir>/<name>.fleet.json``."""

    def __init__(self, state_dir: str, name: str, *, server: FleetServer | None = None):
        self.dir, self.name = os.path.abspath(state_dir), check_name(name)
        self.path = os.path.join(self.dir, f"{name}.fleet.json")
        self._server = server

    # --- state -----------------------------------------------------------------------------
    def load(self) -> FleetRolloutState | None:
        """The state, with the read a killed controller saved but did not apply."""
        try:
            with open(self.path) as f:
                st = FleetRolloutState(**unpack(json.load(f)))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            raise DataError(f"fleet rollout state {self.path} is unreadable: {e}") from e
        try:
            with open(self.pending_path) as f:
                ahead = json.load(f)
        except FileNotFoundError:
            return st
        except ValueError as e:
            raise DataError(f"fleet rollout read {self.pending_path} is unreadable: {e}") from e
        if st.phase == RUNNING and ahead.get("tick") == st.ticks:  # else applied already
            st.pending = ahead["snapshot"]
        return st

    def save(self, st: FleetRolloutState) -> None:
        os.makedirs(self.dir, exist_ok=True)
        st.updated_at = time.time()  # fields one level deep: asdict would deep-copy O(keys)
        doc = {f.name: getattr(st, f.name) for f in fields(st)}
        write_json_atomic(self.path, pack({**doc, "pending": None}))

    @property
    def pending_path(self) -> str:
        return os.path.join(self.dir, f"{self.name}.fleet.read.json")

    def save_read(self, st: FleetRolloutState) -> None:
        """Write-ahead: the read the next tick applies, beside the state (the state's own
        file is rewritten once per tick, after applying)."""
        write_json_atomic(self.pending_path, {"tick": st.ticks, "snapshot": st.pending})

    @contextlib.contextmanager
    def driving(self) -> Iterator[None]:
        """Hold the rollout's flock (one controller at a time) or refuse."""
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, f"{self.name}.fleet.lock"), "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RolloutError(f"fleet rollout {self.name!r} is being driven by another "
                                   "controller") from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def server(self, st: FleetRolloutState) -> FleetServer:
        return self._server or FleetServer(st.evidence_url, st.routing_path)

    # --- start -----------------------------------------------------------------------------
    def start(self, *, champion_version: str, candidate_version: str, labels: list[str],
              evidence_url: str, routing_path: str, config: FleetConfig,
              steps: list[int], ticks_per_step: int, max_ticks: int) -> FleetRolloutState:
        """A new rollout (refused while another of this name is not ended)."""
        from mleops.rollout.control.controller import parse_steps

        steps = parse_steps(steps)
        if ticks_per_step < 1 or max_ticks < 1:
            raise DataError("ticks_per_step and max_ticks must be >= 1")
        old = self.load()
        if old is not None and old.phase in (RUNNING, FINISHING):
            raise RolloutError(f"fleet rollout {self.name!r} is still {old.phase} (candidate "
                               f"{old.candidate_version}): resume or abort it first")
        st = FleetRolloutState(
            name=self.name, rollout_id=uuid.uuid4().hex[:16],
            champion_version=str(champion_version), candidate_version=str(candidate_version),
            labels=[str(k) for k in labels], evidence_url=evidence_url, routing_path=routing_path,
            config=asdict(config), steps=list(steps), ticks_per_step=int(ticks_per_step),
            max_ticks=int(max_ticks), evidence=FleetEvidence(len(labels), config).to_dict())
        st.event("started", weight=st.weight)
        self.save(st)
        self.route(st)
        return st

    # --- ticks -----------------------------------------------------------------------------
    def tick(self, st: FleetRolloutState, registry=None) -> FleetRolloutState:
        """One look at the server (or the end, once everything is decided or time is up)."""
        if st.phase == RUNNING and st.pending is None:
            try:
                st.pending = self.server(st).read(st.keys, st.candidate_version)
            except EvidenceUnavailable as e:
                st.event("no evidence", error=str(e))
                self.save(st)
                return st
            self.save_read(st)  # write-ahead: this read is the next block, killed or not
            failpoints.hit("fleet.read_saved")
        if st.phase == RUNNING:
            self._apply(st)
            failpoints.hit("fleet.applied")
            self.route(st)
        if st.phase == FINISHING and registry is not None:
            self._finish(st, registry)
        return st

    def _apply(self, st: FleetRolloutState) -> None:
        ev = FleetEvidence.from_dict(st.evidence)
        applied_now = st.pending
        decided = ev.update_counters(increment(st.pending, st.applied))
        st.evidence, st.pending = ev.to_dict(arrays=True), None
        st.applied = advance(applied_now, st.applied)
        st.ticks += 1
        if decided.size:
            st.event("decided", tick=st.ticks, **{NAMES[c]: int(
                (ev.a["decision"][decided] == c).sum()) for c in (ROLLBACK, PROMOTE)})
        if (ev.a["decision"] != 0).all() or st.ticks >= st.max_ticks:
            st.phase = FINISHING
            st.event("finishing", counts=ev.counts(), reason="all decided" if
                     (ev.a["decision"] != 0).all() else "time limit: undecided stay")
        self.save(st)

    def _finish(self, st: FleetRolloutState, registry) -> None:
        from mleops.rollout.control.fleet_finish import finish_fleet_rollout

        out = finish_fleet_rollout(registry, st.name, rollout_id=st.rollout_id,
                                   champion_version=st.champion_version,
                                   candidate_version=st.candidate_version,
                                   evidence=FleetEvidence.from_dict(st.evidence))
        failpoints.hit("fleet.registered")
        st.result, st.phase = out, DONE
        st.event("done", version=out["version"], counts=out["counts"])
        self.save(st)
        self.route(st)

    def routing_of(self, st: FleetRolloutState) -> Routing:
        """What the server must route, from the state alone."""
        d = np.asarray(st.evidence["decision"])
        mode = "shadow" if st.config.get("mode") == "paired" else "split"
        if st.phase == DONE:  # the merged version: promoted keys on the candidate's table
            return Routing(100, "split", tuple(np.flatnonzero(d != PROMOTE).tolist()))
        if st.phase == ABORTED:
            return Routing(0, mode)
        # decided keys leave the ramp: rolled back on the champion, promoted on the candidate
        return Routing(st.weight, mode, tuple(np.flatnonzero(d == ROLLBACK).tolist()),
                       tuple(np.flatnonzero(d == PROMOTE).tolist()))

    def route(self, st: FleetRolloutState) -> None:
        self.server(st).route(self.routing_of(st))

    def abort(self, reason: str) -> FleetRolloutState:
        """Every key back on the champion; nothing registered."""
        st = self._must()
        if st.phase == DONE:
            raise RolloutError(f"fleet rollout {self.name!r} is done (version "
                               f"{st.result.get('version')}): nothing to abort")
        st.phase = ABORTED
        st.event("aborted", reason=reason)
        self.save(st)
        self.route(st)
        return st

    def _must(self) -> FleetRolloutState:
        st = self.load()
        if st is None:
            raise DataError(f"no fleet rollout {self.name!r} in {self.dir}")
        return st

    def drive(self, registry, *, interval_s: float, timeout_s: float | None = None,
              on_tick: Callable[[FleetRolloutState], None] | None = None,
              sleep: Callable[[float], None] = time.sleep) -> FleetRolloutState:
        """Tick every ``interval_s`` until done (or ``timeout_s``: the state stays resumable;
        0 only writes the routing the state implies, which repairs a killed controller's)."""
        with self.driving():
            st = self._must()
            self.route(st)  # whatever a killed controller left, traffic follows the state
            end = None if timeout_s is None else time.monotonic() + timeout_s
            while st.phase in (RUNNING, FINISHING) and (end is None or time.monotonic() < end):
                st = self.tick(st, registry)
                if on_tick:
                    on_tick(st)
                if st.phase in (RUNNING, FINISHING):
                    sleep(interval_s)
            return st


def summary(st: FleetRolloutState, *, all_keys: bool = False, worst: int = 10) -> dict[str, Any]:
    """What `rollout fleet status` prints: counts, the worst keys (``all_keys``: every key)."""
    from mleops.rollout.control.fleet_finish import worst_keys

    ev = FleetEvidence.from_dict(st.evidence)
    rows = worst_keys(st.labels, ev, None if all_keys else worst)
    return {"name": st.name, "rollout_id": st.rollout_id, "phase": st.phase,
            "champion": st.champion_version, "candidate": st.candidate_version,
            "ticks": st.ticks, "weight": st.weight, "counts": ev.counts(),
            "result": st.result, "keys" if all_keys else "worst_keys": rows,
            "last_event": st.history[-1] if st.history else None}


__all__ = ["ABORTED", "DONE", "FINISHING", "FleetRollout", "FleetRolloutState", "RUNNING",
           "summary"]
