"""``evaluate_stream``: the controller's exact decision code, run on recorded or simulated rows.

What would the rollout have decided on this traffic? The rows are cut into ticks of
``tick_seconds``; a replay backend hands the controller one tick at a time, and the real
:class:`~mleops.rollout.control.controller.Controller` (the same ``tick``, test, guardrails and step
logic as ``mleops rollout``) decides, against an in-memory state store and a registry that
only records. A test of this function is a test of the controller, and the benchmark measures
the code that runs in production.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from mleops.errors import DataError
from mleops.rollout.backends.base import MODES, Observation
from mleops.rollout.control.controller import Controller
from mleops.rollout.kernels.config import TestConfig
from mleops.rollout.kernels.guardrails import Guardrails
from mleops.rollout.kernels.statistics import Summary
from mleops.rollout.state.store import PROMOTED, ROLLED_BACK, WAITING, RolloutState

#: what ``mleops rollout start`` uses when an option is not given
DEFAULTS = {"mode": "split", "tick_seconds": 1.0, "steps": "10,25,50,100", "source": "rows"}
COLUMNS = ("time", "request", "arm", "loglik")
#: "rows": the local router's evidence (rows with request ids); "sums": what the Kubernetes
#: backend reads (per-version count, sum and sum of squares per tick, no pairing)
SOURCES = ("rows", "sums")


class _Replay:
    """A backend that plays one tick of recorded rows per ``read``."""

    def __init__(self, ticks: list[Observation], pairs_rows: bool = True):
        self.ticks, self.next, self.pairs_rows = ticks, 0, pairs_rows

    def describe(self) -> dict[str, Any]:
        return {"kind": "replay"}

    def deploy_canary(self, state: RolloutState) -> None:
        state.cursor = {}

    def set_weight(self, state: RolloutState) -> None:
        pass

    def promote(self, state: RolloutState) -> None:
        pass

    def rollback(self, state: RolloutState) -> None:
        pass

    def read(self, state: RolloutState) -> Observation:
        obs = self.ticks[self.next]
        self.next += 1
        return obs


class _Memory:
    """A state store in memory (one rollout, one process)."""

    def __init__(self):
        self.states: dict[str, RolloutState] = {}

    def load(self, name: str) -> RolloutState | None:
        return self.states.get(name)

    def save(self, state: RolloutState) -> None:
        self.states[state.name] = state

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        yield


class _Registry:
    """Versions "1" (champion) and "2" (candidate); promotions and tags only recorded."""

    def champion(self, name: str):
        return ("1", None)

    def load_version(self, name: str, version: str):
        return (str(version), None)

    def promote(self, name: str, version: str, alias: str = "champion", *,
                force: bool = False) -> None:
        pass

    def tag_version(self, name: str, version: str, tags: dict) -> None:
        pass

    def drop_alias(self, name: str, alias: str, version: str) -> None:
        pass


def _columns(rows: Any) -> dict[str, np.ndarray]:
    try:
        cols = {k: np.asarray(rows[k]) for k in COLUMNS}
    except (KeyError, TypeError, IndexError) as e:
        raise DataError(f"evaluate_stream needs columns {list(COLUMNS)} (and optionally "
                        f"loglik_champion): {e!r}") from None
    if "loglik_champion" in getattr(rows, "keys", lambda: rows.columns)():
        cols["loglik_champion"] = np.asarray(rows["loglik_champion"], dtype=float)
    n = cols["time"].shape[0]
    if any(v.shape != (n,) for v in cols.values()):
        raise DataError("evaluate_stream: every column must be 1-D and of the same length")
    t = cols["time"].astype(float)
    if n and (not np.isfinite(t).all() or (np.diff(t) < 0).any()):
        raise DataError("evaluate_stream: time must be finite and non-decreasing")
    known = (cols["arm"] == "canary") | (cols["arm"] == "champion")
    if not known.all():
        raise DataError(f"evaluate_stream: arm must be 'canary' or 'champion', got "
                        f"{cols['arm'][~known][0]!r} at row {int(np.flatnonzero(~known)[0])}")
    cols["time"], cols["loglik"] = t, cols["loglik"].astype(float)
    return cols


def _ticks(cols: dict[str, np.ndarray], mode: str, tick: float, source: str
           ) -> list[Observation]:
    t = cols["time"]
    if not t.size:
        return []
    k = np.floor((t - t[0]) / tick).astype(np.int64)
    edges = np.searchsorted(k, np.arange(int(k[-1]) + 2))
    canary = cols["arm"] == "canary"
    paired = "loglik_champion" in cols
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        sl = slice(int(a), int(b))
        c_mask = canary[sl]
        req, ll = cols["request"][sl], cols["loglik"][sl]
        if mode == "shadow":  # the canary scored mirrored rows; the champion scored them too
            if not paired:
                raise DataError("shadow mode needs loglik_champion (both scores of a row)")
            c = c_mask & np.isfinite(cols["loglik_champion"][sl])
            if source == "sums":  # per-version sums: the champion's over every row it served
                champ = np.where(c_mask, cols["loglik_champion"][sl], ll)
                obs = Observation(np.zeros(0), np.zeros(0), canary_sums=Summary.of(ll[c]),
                                  champion_sums=Summary.of(champ[np.isfinite(champ)]))
            else:
                obs = Observation(ll[c], cols["loglik_champion"][sl][c],
                                  canary_requests=req[c], champion_requests=req[c])
        elif source == "sums":
            obs = Observation(np.zeros(0), np.zeros(0), canary_sums=Summary.of(ll[c_mask]),
                              champion_sums=Summary.of(ll[~c_mask]))
        else:
            obs = Observation(ll[c_mask], ll[~c_mask], canary_requests=req[c_mask],
                              champion_requests=req[~c_mask])
        obs.arms = {arm: {"requests": float(np.unique(req[m]).size), "errors": 0.0,
                          "outside_support_rate": 0.0, "p99_ms": None}
                    for arm, m in (("canary", c_mask), ("champion", ~c_mask))}
        out.append(obs)
    return out


def _config(config: Any) -> tuple[dict[str, Any], TestConfig, Guardrails]:
    if isinstance(config, TestConfig):
        config = config.to_dict()
    cfg = {**DEFAULTS, **dict(config or {})}
    test_keys = {f.name for f in dataclasses.fields(TestConfig)} - {"mode"}
    guard_keys = {f.name for f in dataclasses.fields(Guardrails)}
    unknown = set(cfg) - test_keys - guard_keys - set(DEFAULTS)
    if unknown:
        raise DataError(f"evaluate_stream: unknown config keys {sorted(unknown)}")
    if cfg["source"] not in SOURCES:
        raise DataError(f"source must be one of {list(SOURCES)}, got {cfg['source']!r}")
    if cfg["mode"] not in MODES:
        raise DataError(f"mode must be one of {list(MODES)}, got {cfg['mode']!r}")
    if not (isinstance(cfg["tick_seconds"], int | float) and cfg["tick_seconds"] > 0
            and math.isfinite(cfg["tick_seconds"])):
        raise DataError(f"tick_seconds must be > 0, got {cfg['tick_seconds']!r}")
    test = TestConfig(**{k: v for k, v in cfg.items() if k in test_keys})
    guards = Guardrails(**{k: v for k, v in cfg.items() if k in guard_keys})
    return cfg, test, guards


def evaluate_stream(rows: Mapping[str, Any] | Any, config: Any = None) -> dict[str, Any]:
    """What the rollout controller decides on ``rows``, tick by tick, with ``config``.

    ``rows``: equal-length columns in arrival order (a mapping or a DataFrame): ``time``
    (seconds, non-decreasing), ``request`` (rows of one request share it), ``arm``
    (``"canary"`` / ``"champion"``: who served the row), ``loglik`` (the serving arm's
    log-likelihood of the row) and, for shadow mode, ``loglik_champion`` (the champion's
    log-likelihood of the same row). ``config``: a dict (or a :class:`TestConfig`) with
    ``mode`` (``split``/``shadow``), ``tick_seconds``, ``steps``, ``source`` (``rows``: the
    local router's evidence; ``sums``: the Kubernetes backend's per-tick sums) and any field of
    :class:`TestConfig` or :class:`Guardrails` (``min_drop``, ``alpha``, ``beta``,
    ``step_min_rows`` ...); missing keys take the CLI's defaults.

    Returns ``decision`` (``rollback``, ``promote`` or ``continue`` when the rows ran out),
    ``canary_rows`` and ``time`` at the decision, ``reason``, ``phase``, ``ticks`` and the
    final ``verdict``.
    """
    cfg, test, guards = _config(config)
    cols = _columns(rows)
    ticks = _ticks(cols, cfg["mode"], float(cfg["tick_seconds"]), cfg["source"])
    t0 = float(cols["time"][0]) if cols["time"].size else 0.0
    now = [t0]
    replay = _Replay(ticks, pairs_rows=cfg["source"] == "rows")
    controller = Controller(_Memory(), replay, _Registry(), clock=lambda: now[0])
    state = controller.start("offline", "2", steps=cfg["steps"], mode=cfg["mode"], test=test,
                             guardrails=guards)
    for i in range(len(ticks)):
        now[0] = t0 + (i + 1) * float(cfg["tick_seconds"])
        state = controller.tick("offline")
        if state.terminal or state.phase == WAITING:
            break
    decision = {ROLLED_BACK: "rollback", PROMOTED: "promote", WAITING: "promote"}.get(
        state.phase, "continue")
    v = state.verdict or {}
    return {"decision": decision, "canary_rows": int(v.get("rows_canary") or 0),
            "time": now[0], "reason": state.reason, "phase": state.phase,
            "ticks": controller.backend.next, "verdict": v}


__all__ = ["DEFAULTS", "SOURCES", "evaluate_stream"]
