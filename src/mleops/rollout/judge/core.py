"""The rollback judge: the controller's decision, answered to Argo Rollouts and Flagger.

When another controller moves the traffic (an Argo ``Rollout``, a Flagger ``Canary``), mleops
only judges: for each (model, canary version, champion version) it keeps the controller's
sequential test and a Prometheus cursor (:class:`~mleops.rollout.backends.prometheus.
PrometheusEvidence`), and every request that finds its last look older than
``min_interval_s`` is one tick: the counters' increments since the last tick are one block,
weighed by the same code as the controller (:func:`mleops.rollout.kernels.decision.decide`). Polling
faster returns the last answer without reading Prometheus, so a caller cannot split the
evidence into many tiny blocks. The first request starts the cursor (what earlier traffic
left does not count) and answers ``continue``. ``rollback`` and ``promote`` are final for
their key (the test stopped; a later look would be a new test), and a key's state is a JSON
file in ``state_dir`` (atomic replace), so a restarted judge resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mleops.errors import DataError, MleopsError
from mleops.rollout.backends.prometheus import PrometheusEvidence
from mleops.rollout.kernels.config import TestConfig
from mleops.rollout.kernels.decision import PROMOTE, ROLLBACK, Counters, decide, unreadable
from mleops.rollout.kernels.guardrails import Guardrails
from mleops.rollout.kernels.observation import Observation
from mleops.rollout.kernels.statistics import SequentialTest
from mleops.rollout.state.store import check_name, write_json_atomic

DECISIONS = ("continue", "promote", "rollback")
FINAL = ("promote", "rollback")
MAX_KEYS = 1000
STATE_VERSION = 1


class JudgeFull(MleopsError, RuntimeError):
    """Every tracked analysis is still running: a new one would evict live evidence."""


@dataclass
class Analysis:
    """One (model, canary, champion) being judged (JSON-serialisable but for ``lock``)."""

    model: str
    canary: str
    champion: str
    test_config: dict[str, Any]
    guardrails: dict[str, Any]
    test: dict[str, Any]
    started_at: float
    last_data_at: float
    step_rows: int = 0
    cursor: dict[str, Any] | None = None  # None: not started (Prometheus unreachable so far)
    verdict: dict[str, Any] = field(default_factory=dict)
    answer: dict[str, Any] = field(default_factory=dict)
    ticked_at: float = 0.0  # 0: never ticked
    ticks: int = 0
    version: int = STATE_VERSION
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model, self.canary, self.champion

    @property
    def ended(self) -> bool:
        return self.answer.get("decision") in FINAL

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "lock"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Analysis:
        if d.get("version") != STATE_VERSION:
            raise DataError(f"unknown judge state version {d.get('version')!r}")
        known = {f.name for f in dataclasses.fields(cls)} - {"lock"}
        return cls(**{k: v for k, v in d.items() if k in known})


def check_key(model: str, canary: str, champion: str) -> tuple[str, str, str]:
    """The names the judge takes (those of rollouts), two different versions."""
    for what, value in (("model", model), ("canary", canary), ("champion", champion)):
        try:
            check_name(value)
        except DataError:
            raise DataError(f"invalid {what} {value!r}: letters, digits, '.', '_' and '-' "
                            "(at most 128)") from None
    if canary == champion:
        raise DataError(f"canary and champion are the same version {canary!r}: nothing to "
                        "compare")
    return model, canary, champion


class JudgeStore:
    """``<dir>/<model>@<canary>@<champion>.json`` per analysis ('@' is in no name), replaced
    atomically; no directory: memory only."""

    def __init__(self, directory: str | None):
        self.directory = os.path.abspath(directory) if directory else None

    def _path(self, key: tuple[str, str, str]) -> str:
        return os.path.join(self.directory, "@".join(key) + ".json")

    def load_all(self) -> list[Analysis]:
        """Every stored analysis, least recently ticked first."""
        if self.directory is None or not os.path.isdir(self.directory):
            return []
        out = []
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path) as f:
                    a = Analysis.from_dict(json.load(f))
                check_key(*a.key)
            except (OSError, ValueError, TypeError) as e:
                raise DataError(f"judge state {path} is unreadable ({e}): move it away to "
                                "start that analysis afresh") from None
            out.append(a)
        return sorted(out, key=lambda a: a.ticked_at)

    def save(self, a: Analysis) -> None:
        if self.directory is None:
            return
        os.makedirs(self.directory, exist_ok=True)
        write_json_atomic(self._path(a.key), a.to_dict())

    def delete(self, key: tuple[str, str, str]) -> None:
        if self.directory is not None:
            try:
                os.remove(self._path(key))
            except FileNotFoundError:
                pass


class Judge:
    """Answers rollout decisions from Prometheus at ``prometheus`` (series narrowed by
    ``labels``), with ``test`` and ``guardrails`` for analyses it starts (a resumed one keeps
    those it started with, as a rollout does)."""

    def __init__(self, prometheus: str, *, labels: dict[str, str] | None = None,
                 test: TestConfig | None = None, guardrails: Guardrails | None = None,
                 min_interval_s: float = 10.0, state_dir: str | None = None,
                 max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.time):
        if not (isinstance(min_interval_s, int | float) and math.isfinite(min_interval_s)
                and min_interval_s >= 0):
            raise DataError(f"min_interval_s must be >= 0 seconds, got {min_interval_s!r}")
        if not (isinstance(max_keys, int) and max_keys >= 1):
            raise DataError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        self.prometheus, self.labels = prometheus, dict(labels or {})
        # Prometheus sums cannot be paired row by row: the judge's test is unpaired
        self.test = dataclasses.replace(test or TestConfig(), mode="unpaired")
        self.guardrails = guardrails or Guardrails()
        self.min_interval_s, self.max_keys, self.clock = min_interval_s, max_keys, clock
        self.store = JudgeStore(state_dir)
        self._lock = threading.Lock()
        self._analyses: OrderedDict[tuple[str, str, str], Analysis] = OrderedDict()
        self._gauges = _Gauges()
        for a in self.store.load_all()[-max_keys:]:
            self._analyses[a.key] = a
            self._gauges.set(a)

    def evidence(self, model: str) -> PrometheusEvidence:
        return PrometheusEvidence(self.prometheus, model, labels=self.labels)

    def judge(self, model: str, canary: str, champion: str) -> dict[str, Any]:
        """The decision for this key: a new tick when the last is ``min_interval_s`` old."""
        key = check_key(model, canary, champion)
        a = self._analysis(key)
        with a.lock:
            now = self.clock()
            if a.ended or (a.ticks and now - a.ticked_at < self.min_interval_s):
                return {**a.answer, "cached": True}
            self._tick(a, now)
            self.store.save(a)
            self._gauges.set(a)
            return {**a.answer, "cached": False}

    def metrics(self) -> bytes:
        """``mleops_judge_log_e`` per analysis and hypothesis, Prometheus text format."""
        return self._gauges.exposition()

    def _analysis(self, key: tuple[str, str, str]) -> Analysis:
        with self._lock:
            if (a := self._analyses.get(key)) is not None:
                self._analyses.move_to_end(key)
                return a
            if len(self._analyses) >= self.max_keys:
                old = next((k for k, v in self._analyses.items() if v.ended), None)
                if old is None:
                    raise JudgeFull(f"{len(self._analyses)} analyses are running (the "
                                    f"limit): none ended, none evicted")
                del self._analyses[old]
                self.store.delete(old)
                self._gauges.remove(old)
            now = self.clock()
            a = Analysis(*key, test_config=self.test.to_dict(),
                         guardrails=self.guardrails.to_dict(),
                         test=SequentialTest(self.test).to_dict(), started_at=now,
                         last_data_at=now)
            self._analyses[key] = a
            return a

    def _tick(self, a: Analysis, now: float) -> None:
        """One block: read the increments since the cursor, decide, record the answer."""
        g, counters = Guardrails.from_dict(a.guardrails), Counters(a.last_data_at, a.step_rows)
        evidence = self.evidence(a.model)
        a.ticks, a.ticked_at = a.ticks + 1, now
        try:
            if a.cursor is None:
                a.cursor = evidence.start(a.canary, a.champion)
                return self._answer(a, "continue", "started: counting canary and champion "
                                                   "rows from now", now)
            sums, arms, cursor = evidence.read(a.canary, a.champion, a.cursor)
        except MleopsError as e:  # Prometheus down: hold, then roll back at the timeout
            d = unreadable(e, counters, now, g)
        else:
            empty = np.zeros(0)
            obs = Observation(empty, empty, canary_sums=sums["canary"],
                              champion_sums=sums["champion"], arms=arms)
            a.cursor = cursor
            d = decide(a.test, TestConfig.from_dict(a.test_config), obs, g, counters, now)
            if d.test is not None:
                a.test, a.verdict = d.test, d.verdict.to_dict()
                a.last_data_at, a.step_rows = d.counters.last_data_at, d.counters.step_rows
        decision = {ROLLBACK: "rollback", PROMOTE: "promote"}.get(d.action, "continue")
        return self._answer(a, decision, d.reason, now)

    @staticmethod
    def _answer(a: Analysis, decision: str, reason: str, now: float) -> None:
        cfg, v = TestConfig.from_dict(a.test_config), a.verdict
        a.answer = {"model": a.model, "canary": a.canary, "champion": a.champion,
                    "decision": decision, "reason": reason,
                    "log_e_rollback": v.get("log_e_drop", 0.0),
                    "log_e_not_worse": v.get("log_e_safe", 0.0),
                    "threshold_rollback": math.log(1 / cfg.alpha),
                    "threshold_not_worse": math.log(1 / cfg.beta),
                    "rows_canary": v.get("rows_canary", 0),
                    "rows_champion": v.get("rows_champion", 0),
                    "mean_diff": v.get("mean_diff"), "ci_low": v.get("ci_low"),
                    "ci_high": v.get("ci_high"), "ticks": a.ticks, "ticked_at": now,
                    "started_at": a.started_at}


class _Gauges:
    """The judge's own registry (two judges in one process do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry()
        self.log_e = Gauge("mleops_judge_log_e", "Log e-value of the judge's sequential test "
                           "(rollback: against 'canary not worse'; not_worse: against 'canary "
                           "worse by min_drop')", ["model", "canary", "champion", "hypothesis"],
                           registry=self.registry)

    def set(self, a: Analysis) -> None:
        for hypothesis, k in (("rollback", "log_e_drop"), ("not_worse", "log_e_safe")):
            value = a.verdict.get(k)
            self.log_e.labels(*a.key, hypothesis).set(0.0 if value is None else value)

    def remove(self, key: tuple[str, str, str]) -> None:
        for hypothesis in ("rollback", "not_worse"):
            try:
                self.log_e.remove(*key, hypothesis)
            except KeyError:
                pass

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


__all__ = ["DECISIONS", "Analysis", "Judge", "JudgeFull", "JudgeStore", "check_key"]
