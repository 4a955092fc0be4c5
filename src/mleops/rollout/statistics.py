"""Decision statistics of a canary rollout: anytime-valid e-processes on live log-likelihood.

The controller looks after every tick, so a fixed-sample test would be peeked at hundreds of
times. The evidence is a mixture likelihood ratio on the Brownian-motion view of the mean
difference (estimate ``mean``, information ``I = 1/Var(mean)`` from plug-in variances, score
``S = mean * I``; drift ``theta`` gives ``exp(theta*S - theta**2*I/2)``): an (asymptotic)
martingale under the null, so Ville's inequality bounds the chance of *ever* crossing
``1/alpha`` however often one looks (Waudby-Smith et al., "Time-uniform central limit theory").

* rollback: H0 "canary not worse" (diff >= 0), mixture over drops ``min_drop * _RATIOS``;
* not_worse: H0 "canary worse by >= min_drop" (diff <= -min_drop), the mirror mixture.

Most weight sits at ``0.8 * min_drop``: for a drop of exactly ``min_drop`` that drift needs the
fewest rows at the 90th percentile (smaller gains too slowly, larger is too noisy); the rest
catches larger drops quicker and smaller ones eventually. Rows are clipped around a robust
centre so a few absurd rows cannot force a decision, and the variance is taken from rows
clipped ``_WIDE`` times further out, so a clipped row widens the uncertainty more than it moves
the mean. Levels come from a reference block (the first ``REF_ROWS`` rows, pooled over arms
so A/A stays exchangeable) and are frozen once it is full: every later row is clipped with
levels fixed before it arrived; the block itself (bounded, before any decision can matter)
uses its own. The test is then on the clipped (winsorised) mean difference. The default clip,
16 robust sds, caps scoring glitches (hundreds of sds out) yet keeps a canary that is really
worse on its tail rows (a wrong family loses tens of nats on ~1% of rows): at 8, the split
benchmark's Weibull-vs-lognormal canary needed ~45% more rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from mleops.errors import DataError
from mleops.rollout.evidence import (
    REF_ROWS,
    decide,
    evidence,
    half_width,
    log_e,
    part_sums,
    ref_levels,
    ref_take,
    sample_var,
)

MODES = ("paired", "unpaired")
DECISIONS = ("continue", "rollback", "not_worse")  # codes 0, 1, 2 in Trace.decision


@dataclass(frozen=True)
class Summary:
    """Sufficient statistics of a stream (count, sum, sum of squares): all a test needs."""

    n: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0

    @classmethod
    def of(cls, values: Any) -> Summary:
        x = np.asarray(values, dtype=float).ravel()
        return cls(float(x.size), float(x.sum()), float((x * x).sum()))

    def __add__(self, other: Summary) -> Summary:
        return Summary(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    def __sub__(self, other: Summary) -> Summary:
        """Increment between two readings of cumulative counters (Prometheus)."""
        return Summary(self.n - other.n, self.total - other.total, self.total_sq - other.total_sq)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else math.nan

    @property
    def var(self) -> float:
        """Unbiased sample variance (0 with fewer than two values)."""
        return float(sample_var(self.n, self.total, self.total_sq)) if self.n >= 2 else 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        try:
            return cls(float(d["n"]), float(d["total"]), float(d["total_sq"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"bad Summary {d!r}: needs numbers n, total, total_sq") from e


@dataclass(frozen=True)
class TestConfig:
    """What the rollout promises: error rates, the tolerance, and the robustness knobs."""

    __test__ = False  # not a pytest class

    mode: str = "unpaired"  # "paired" (shadow: same rows) | "unpaired" (split traffic)
    min_drop: float = 0.05  # nats/row: the smallest drop worth catching (the tolerance)
    alpha: float = 0.01  # false-rollback probability on A/A, over the whole rollout
    beta: float = 0.05  # chance of "not_worse" when the canary is worse by >= min_drop
    min_rows: int = 100  # per arm, before any decision
    clip: float = 16.0  # per-row clipping, in robust sds of the log-likelihoods (0 = off)

    def __post_init__(self) -> None:
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (_finite(self.min_drop) and self.min_drop > 0, "min_drop must be > 0 (nats/row)"),
            (_finite(self.alpha) and 0 < self.alpha < 1, "alpha must be in (0, 1)"),
            (_finite(self.beta) and 0 < self.beta < 1, "beta must be in (0, 1)"),
            (isinstance(self.min_rows, int | np.integer) and not isinstance(
                self.min_rows, bool) and self.min_rows >= 2, "min_rows must be an integer >= 2"),
            (_finite(self.clip) and self.clip >= 0, "clip must be >= 0 (0 turns it off)"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(f"bad rollout test config: {message}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TestConfig:
        names = {f.name for f in fields(cls)}
        if unknown := sorted(set(d) - names):
            raise DataError(f"bad rollout test config: unknown keys {unknown}")
        return cls(**d)


@dataclass(frozen=True)
class Verdict:
    """One look at the evidence: the decision, the numbers behind it, and a line for humans."""

    decision: str  # "rollback" | "not_worse" | "continue"
    rows_canary: int
    rows_champion: int
    mean_diff: float  # canary minus champion, nats/row, after clipping (nan before any data)
    ci_low: float  # always-valid (1 - alpha) confidence sequence on the mean difference
    ci_high: float
    log_e_drop: float  # against "canary not worse": rollback when >= log(1/alpha)
    log_e_safe: float  # against "canary worse by >= min_drop": not_worse when >= log(1/beta)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (non-finite numbers become None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


class SequentialTest:
    """The always-valid test the controller runs every tick; ``to_dict`` resumes it exactly."""

    __test__ = False  # not a pytest class

    def __init__(self, config: TestConfig, state: dict[str, Any] | None = None) -> None:
        self.config = config
        self._sums = np.zeros((3, 5))  # (diff, canary, champion) x part_sums columns
        self._ref: tuple[list[float], list[float]] = ([], [])  # raw rows of the reference
        self._levels: tuple[float, float] | None = None  # (centre, half), frozen once full
        if state:
            self._load(state)

    def update_rows(self, canary: Any, champion: Any) -> None:
        """Add per-row log-likelihoods (paired mode: the same rows, in the same order)."""
        c, p = _rows(canary, "canary"), _rows(champion, "champion")
        paired = self.config.mode == "paired"
        if paired and c.size != p.size:
            raise DataError(f"paired rollout needs as many canary rows as champion rows "
                            f"(the same rows scored twice), got {c.size} and {p.size}")
        if self.config.clip > 0 and self._levels is None:  # paired: count pairs, not rows
            ref_c, ref_p = self._ref
            tc, tp = ref_take(len(ref_c) + len(ref_p) * (not paired), c.size,
                               p.size * (not paired))
            tp = tc if paired else tp
            ref_c.extend(c[:tc].tolist())
            ref_p.extend(p[:tp].tolist())
            c, p = c[tc:], p[tp:]
            if len(ref_c) + len(ref_p) * (not paired) >= REF_ROWS:  # freeze and fold
                centre, half = ref_levels(self.config, np.array(ref_c), np.array(ref_p))
                self._levels = (float(centre), float(half))
                self._sums = self._sums + self._ref_sums()
                self._ref = ([], [])
        if c.size or p.size:
            levels = self._levels or (0.0, np.inf)
            self._sums = self._sums + part_sums(self.config, c, p, *levels)

    def update_sums(self, canary: Summary, champion: Summary) -> None:
        """Add increments from a sums-only source (no clipping is possible).

        In paired mode they are analysed as two independent arms and combined with the paired
        rows by information; treating the same rows as unpaired only loses power (conservative).
        """
        for name, s in (("canary", canary), ("champion", champion)):
            if not all(map(_finite, (s.n, s.total, s.total_sq))) or min(s.n, s.total_sq) < 0:
                raise DataError(f"bad {name} sums {s}: counts must be >= 0 and finite "
                                "(did a counter reset?)")
        self._sums = self._sums + np.array([[0.0] * 5] + [
            [s.n, s.total, s.total_sq, s.total, s.total_sq] for s in (canary, champion)])

    def _ref_sums(self) -> np.ndarray:
        """The reference rows clipped with the levels they define (or the frozen ones)."""
        ref_c, ref_p = (np.array(r, dtype=float) for r in self._ref)
        if not ref_c.size + ref_p.size:
            return np.zeros((3, 5))
        levels = self._levels or ref_levels(self.config, ref_c, ref_p)
        return part_sums(self.config, ref_c, ref_p, *levels)

    def verdict(self) -> Verdict:
        cfg, sums = self.config, self._sums + self._ref_sums()
        mean, info = evidence(cfg, sums)
        log_drop, log_safe = log_e(cfg, mean * info, info)
        n_c, n_p = (int(round(sums[0, 0] + sums[k, 0])) for k in (1, 2))
        code = int(decide(cfg, log_drop, log_safe, n_c, n_p))
        mean, info, log_drop, log_safe = map(float, (mean, info, log_drop, log_safe))
        if info <= 0 and (sums[0, 0] or (sums[1, 0] and sums[2, 0])):  # too few for a variance
            mean = (sums[0, 1] / sums[0, 0] if sums[0, 0] else
                    sums[1, 1] / sums[1, 0] - sums[2, 1] / sums[2, 0])
        half = half_width(cfg, info)
        lo, hi = mean - half, mean + half
        return Verdict(DECISIONS[code], n_c, n_p, mean, lo, hi, log_drop, log_safe,
                       _reason(cfg, code, n_c, n_p, mean, lo, hi, log_drop, log_safe))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (floats round-trip exactly through JSON)."""
        levels = None if self._levels is None else [
            self._levels[0], self._levels[1] if math.isfinite(self._levels[1]) else None]
        return {"version": 1, "config": self.config.to_dict(), "sums": self._sums.tolist(),
                "ref_canary": list(self._ref[0]), "ref_champion": list(self._ref[1]),
                "levels": levels}

    def _load(self, state: dict[str, Any]) -> None:
        try:
            if state.get("version") != 1:
                raise DataError(f"unknown rollout test state version {state.get('version')!r}")
            if (recorded := TestConfig.from_dict(state["config"])) != self.config:
                raise DataError(f"rollout test state was recorded under {recorded}, not "
                                f"{self.config}: start a new test to change the config")
            self._sums = np.array(state["sums"], dtype=float).reshape(3, 5)
            self._ref = ([float(v) for v in state["ref_canary"]],
                         [float(v) for v in state["ref_champion"]])
            lv = state["levels"]
            self._levels = None if lv is None else (
                float(lv[0]), np.inf if lv[1] is None else float(lv[1]))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise DataError(f"bad rollout test state: {e!r}") from e


def _rows(values: Any, name: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} log-likelihoods must be numbers: {e}") from e
    if x.ndim != 1:
        raise DataError(f"{name} log-likelihoods must be a 1-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise DataError(f"{name} log-likelihood row {bad} is {x[bad]} (NaN/inf): a scoring "
                        "bug or a row outside the model's support")
    return x


def _finite(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and math.isfinite(v)


def _reason(cfg: TestConfig, code: int, n_c: int, n_p: int, mean: float, lo: float, hi: float,
            log_drop: float, log_safe: float) -> str:
    rows = f"{n_c:,} canary / {n_p:,} champion rows"
    if n_c == 0 or n_p == 0 or not math.isfinite(mean):
        return f"continue: waiting for rows ({rows})"
    cs = f"{1 - cfg.alpha:.0%} CS [{lo:+.4f}, {hi:+.4f}]"
    e = lambda x: f"{math.exp(min(x, 700.0)):.3g}"
    if code == 1:
        return (f"rollback: canary worse by {-mean:.4f} nats/row ({cs}); e-value {e(log_drop)} "
                f">= 1/alpha = {1 / cfg.alpha:g} after {rows}")
    if code == 2:
        return (f"not_worse: canary within {cfg.min_drop:g} nats/row of the champion (diff "
                f"{mean:+.4f}, {cs}); e-value {e(log_safe)} >= 1/beta = {1 / cfg.beta:g} after "
                f"{rows}")
    if min(n_c, n_p) < cfg.min_rows:
        return f"continue: diff {mean:+.4f} nats/row; {rows}, need {cfg.min_rows} per arm"
    return (f"continue: diff {mean:+.4f} nats/row ({cs}); rollback e-value {e(log_drop)} of "
            f"{1 / cfg.alpha:g}, not-worse e-value {e(log_safe)} of {1 / cfg.beta:g}; {rows}")
