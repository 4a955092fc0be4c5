"""Decision statistics of a canary rollout: anytime-valid e-processes on live log-likelihood.

The controller looks after every tick, so a fixed-sample test would be peeked at hundreds of
times. The evidence is a mixture likelihood ratio on the Brownian-motion view of the mean
contrast (estimate ``theta``, information ``I = 1/Var(theta)``, score ``S = theta * I``;
drift ``d`` gives ``exp(d*S - d**2*I/2)``): an (asymptotic) martingale under the null, so
Ville's inequality bounds the chance of *ever* crossing ``1/alpha`` however often one looks
(Waudby-Smith et al., "Time-uniform central limit theory").

* rollback: H0 "canary not worse" (contrast >= 0), mixture over drops ``min_drop * ratios``;
* not_worse: H0 "canary worse by >= min_drop", the mirror mixture.

What is compared (see :mod:`mleops.rollout.kernels.evidence`): each tick is a block, and the test
sees canary-minus-champion *within* blocks, so a drift both arms share cancels; the unit is a
request (its rows' mean), so rows of one request count once; the variance is a Newey-West
long-run variance of the requests in arrival order (serially correlated rows count for less),
never below a floor tied to the data's scale (skewed differences and short runs cannot look
precise).
Nothing is clipped: the test is about the mean log-likelihood itself, so a canary better on
average is never rolled back because its gains are rare. Rows that are not numbers, or absurd
(more than ``absurd_nats`` below their block's median), are left out of the test and counted
per arm for the guardrails, with their reasons.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mleops.errors import DataError
from mleops.rollout.kernels.config import TestConfig, finite
from mleops.rollout.kernels.evidence import (
    FIELDS,
    IDX,
    LAGS,
    arm_stats,
    block_terms,
    decide,
    estimate,
    half_width,
    log_e,
    paired_lags,
    sums_stats,
)

DECISIONS = ("continue", "rollback", "not_worse")
STATE_VERSION = 3  # 2: without the last accumulator field (sum_blocks), read as 0


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
        return max((self.total_sq - self.total ** 2 / self.n) / (self.n - 1), 0.0) if self.n >= 2 else 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        try:
            return cls(float(d["n"]), float(d["total"]), float(d["total_sq"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"bad Summary {d!r}: needs numbers n, total, total_sq") from e


@dataclass(frozen=True)
class Verdict:
    """One look at the evidence: the decision, the numbers behind it, and a line for humans."""

    decision: str  # "rollback" | "not_worse" | "continue"
    rows_canary: int
    rows_champion: int
    mean_diff: float  # canary minus champion, nats/row (per request; nan before any data)
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
    """The always-valid test the controller runs every tick; ``to_dict`` resumes it exactly.

    Feed it one block per tick (:meth:`update_block` with rows and their request ids, or
    :meth:`update_sums` for sums-only sources); ask :meth:`verdict` after each.
    """

    __test__ = False  # not a pytest class

    def __init__(self, config: TestConfig, state: dict[str, Any] | None = None) -> None:
        self.config = config
        self._acc = np.zeros(len(FIELDS))
        # split: a block with one arm only waits for the other (units per arm, rows per arm)
        self._pending: dict[str, list[float]] = {"canary": [], "champion": []}
        self._pending_rows = [0, 0]
        self.excluded = {arm: {"not_finite": 0, "absurd": 0} for arm in ("canary", "champion")}
        self._head: list[float] = []  # paired: the first and last LAGS differences
        self._tail: list[float] = []
        if state:
            self._load(state)

    # --- input -------------------------------------------------------------------------------
    def update_rows(self, canary: Any, champion: Any) -> None:
        """One block of rows, each row its own request (see :meth:`update_block`)."""
        self.update_block(canary, champion)

    def update_block(self, canary: Any, champion: Any, *, canary_requests: Any = None,
                     champion_requests: Any = None) -> None:
        """Rows one tick saw, with the request each came from (None: a request per row).

        Paired mode: the same rows scored by both models, in the same order.
        """
        c, p = _rows(canary, "canary"), _rows(champion, "champion")
        gc, gp = _groups(canary_requests, c.size, "canary"), _groups(champion_requests, p.size,
                                                                     "champion")
        paired = self.config.mode == "paired"
        if paired:
            if c.size != p.size or (gc is None) != (gp is None) or (
                    gc is not None and not np.array_equal(gc, gp)):
                raise DataError(f"paired rollout needs the same rows scored by both models, "
                                f"got {c.size} canary and {p.size} champion rows")
            centre = _centre(np.concatenate([c, p]))
            keep = self._keep(c, "canary", centre) & self._keep(p, "champion", centre)
            c, p, gc = c[keep], p[keep], (None if gc is None else gc[keep])
            if not c.size:
                return
            d, lc, lp = (_means(v, gc) for v in (c - p, c, p))
            terms = block_terms(True, arm_stats(d), arm_stats(np.zeros(0)), c.size, p.size,
                                arm_stats(lc), arm_stats(lp))
            terms[IDX["lag1_d"]:IDX["lag1_d"] + LAGS] = paired_lags(d, self._tail)
            self._acc += terms
            if len(self._head) < LAGS:
                self._head += d[:LAGS - len(self._head)].tolist()
            self._tail = (self._tail + d.tolist())[-LAGS:]
            return
        centre = _centre(np.concatenate([c, p]))
        kc, kp = self._keep(c, "canary", centre), self._keep(p, "champion", centre)
        self._pending["canary"] += _means(c[kc], None if gc is None else gc[kc]).tolist()
        self._pending["champion"] += _means(p[kp], None if gp is None else gp[kp]).tolist()
        self._pending_rows[0] += int(kc.sum())
        self._pending_rows[1] += int(kp.sum())
        self._flush()

    def update_sums(self, canary: Summary, champion: Summary) -> None:
        """One block from a sums-only source (Prometheus increments): rows are the units."""
        if self.config.mode == "paired":
            raise DataError("sums cannot be paired row by row: use an unpaired test for a "
                            "sums-only source")
        for name, s in (("canary", canary), ("champion", champion)):
            if not all(map(finite, (s.n, s.total, s.total_sq))) or min(s.n, s.total_sq) < 0:
                raise DataError(f"bad {name} sums {s}: counts must be >= 0 and finite "
                                "(did a counter reset?)")
        if self._pending["canary"] or self._pending["champion"]:
            raise DataError("a rollout test takes rows or sums, not both")
        if canary.n < 1 or champion.n < 1:
            return  # one arm silent this tick: no within-block contrast
        c, p = (sums_stats(s.n, s.total, s.total_sq) for s in (canary, champion))
        terms = block_terms(False, c, p, c[0], p[0])
        terms[IDX["sum_blocks"]] = 1.0
        self._acc += terms

    def _keep(self, x: np.ndarray, arm: str, centre: float) -> np.ndarray:
        """Rows the test weighs; the others are counted by reason (for the guardrails)."""
        finite = np.isfinite(x)
        absurd = finite & (x < centre - self.config.absurd_nats)
        self.excluded[arm]["not_finite"] += int((~finite).sum())
        self.excluded[arm]["absurd"] += int(absurd.sum())
        return finite & ~absurd

    def _flush(self) -> None:
        c, p = (np.array(self._pending[a]) for a in ("canary", "champion"))
        if c.size and p.size:
            self._acc += block_terms(False, arm_stats(c), arm_stats(p), *self._pending_rows)
            self._pending = {"canary": [], "champion": []}
            self._pending_rows = [0, 0]

    # --- output ------------------------------------------------------------------------------
    def estimate(self) -> tuple[float, float, dict[str, float]]:
        """(mean contrast, the variance the test uses, the estimates behind it)."""
        return estimate(self.config, self._acc, self._head, self._tail)

    def verdict(self) -> Verdict:
        cfg, a = self.config, self._acc
        mean, var, parts = self.estimate()
        info = 1.0 / var if var > 0 and math.isfinite(var) else 0.0
        log_drop, log_safe = (float(v) for v in log_e(cfg, mean * info if info else 0.0, info))
        n_c, n_p = int(a[IDX["rows_c"]]), int(a[IDX["rows_p"]])
        effective = min(n_c, n_p) * parts.get("effective_share", 1.0)
        units = min(a[IDX["units_c"]], a[IDX["units_p"]])
        if a[IDX["sum_blocks"]] > 0:  # sums: the variance comes from the blocks, they are the units
            units = min(units, a[IDX["sum_blocks"]])
        ready = (effective >= cfg.min_rows and units >= cfg.min_units
                 and a[IDX["blocks"]] >= cfg.min_blocks and info > 0)
        code = decide(cfg, log_drop, log_safe, ready)
        half = half_width(cfg, info)
        lo, hi = mean - half, mean + half
        return Verdict(DECISIONS[code], n_c, n_p, float(mean), lo, hi, log_drop, log_safe,
                       _reason(cfg, code, n_c, n_p, int(a[IDX["blocks"]]), float(mean), lo,
                               hi, log_drop, log_safe))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (floats round-trip exactly through JSON)."""
        return {"version": STATE_VERSION, "config": self.config.to_dict(),
                "acc": self._acc.tolist(), "pending": self._pending,
                "pending_rows": list(self._pending_rows), "excluded": self.excluded,
                "head": list(self._head), "tail": list(self._tail)}

    def _load(self, state: dict[str, Any]) -> None:
        try:
            version = state.get("version")
            if version not in (2, STATE_VERSION):
                raise DataError(f"unknown rollout test state version {state.get('version')!r} "
                                f"(this mleops writes {STATE_VERSION}): start a new rollout")
            if (recorded := TestConfig.from_dict(state["config"])) != self.config:
                raise DataError(f"rollout test state was recorded under {recorded}, not "
                                f"{self.config}: start a new test to change the config")
            acc = [float(v) for v in state["acc"]] + ([0.0] if version == 2 else [])
            self._acc = np.array(acc, dtype=float).reshape(len(FIELDS))
            self._pending = {a: [float(v) for v in state["pending"][a]]
                             for a in ("canary", "champion")}
            self._pending_rows = [int(v) for v in state["pending_rows"]]
            self.excluded = {a: {k: int(v) for k, v in state["excluded"][a].items()}
                             for a in ("canary", "champion")}
            self._head = [float(v) for v in state["head"]]
            self._tail = [float(v) for v in state["tail"]]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise DataError(f"bad rollout test state: {e!r}") from e


def _rows(values: Any, name: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name} log-likelihoods must be numbers: {e}") from e
    if x.ndim != 1:
        raise DataError(f"{name} log-likelihoods must be a 1-D array, got shape {x.shape}")
    return x


def _centre(x: np.ndarray) -> float:
    """The block's median log-likelihood (both arms), what "absurd" is measured from."""
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else 0.0


def _groups(requests: Any, n: int, name: str) -> np.ndarray | None:
    """Request ids as consecutive integers (None: every row is its own request)."""
    if requests is None:
        return None
    g = np.asarray(requests)
    if g.shape != (n,):
        raise DataError(f"{name} request ids: expected {n}, got shape {g.shape}")
    return np.unique(g, return_inverse=True)[1].ravel()


def _means(x: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Mean of ``x`` per request (None: every row is its own request)."""
    if groups is None or not x.size:
        return x
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return np.bincount(inv.ravel(), weights=x) / counts


def _reason(cfg: TestConfig, code: int, n_c: int, n_p: int, blocks: int, mean: float,
            lo: float, hi: float, log_drop: float, log_safe: float) -> str:
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
    if blocks < cfg.min_blocks:
        return (f"continue: diff {mean:+.4f} nats/row; {blocks} ticks with both arms, need "
                f"{cfg.min_blocks}")
    return (f"continue: diff {mean:+.4f} nats/row ({cs}); rollback e-value {e(log_drop)} of "
            f"{1 / cfg.alpha:g}, not-worse e-value {e(log_safe)} of {1 / cfg.beta:g}; {rows}")

__all__ = ["DECISIONS", "STATE_VERSION", "SequentialTest", "Summary", "Verdict"]
