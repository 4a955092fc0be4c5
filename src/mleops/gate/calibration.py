"""Held-out evaluation: per-row log-likelihood and calibration of a fitted model.

The gate compares models by their per-row held-out log-likelihood (a proper scoring rule), but
a model can win on likelihood and still be miscalibrated, so calibration is measured too:

* continuous families: probability integral transform u = F(x), uniform under a correct model;
* count families: randomized PIT u = F(x-1) + V (F(x) - F(x-1)), V ~ U(0,1), which is exactly
  uniform under a correct discrete model (the plain PIT is not);
* logistic: expected calibration error, Brier score and a reliability table.

Censored rows only bound the value: a row right-censored at c has F(X) ~ U(F(c), 1) under a
correct model, so it gets the randomized PIT u = F(c) + V (1 - F(c)) (left-censored: V F(c);
interval (a, b]: F(a) + V (F(b) - F(a))). Every row then contributes an exactly uniform PIT
under a correct model; dropping censored rows instead would skew the PIT towards small values
(a correct latency model with 4% timeouts showed KS 0.04 that way).
Every number returned is a plain float/int/list so the dict can go straight into JSON/MLflow.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from mleops.artifact import ModelArtifact
from mleops.errors import DataError
from mleops.fit.data import INTERVAL, LEFT, RIGHT, make_data

#: central-interval levels whose coverage is reported (as ``coverage_50`` ...)
COVERAGE_LEVELS = (0.5, 0.8, 0.95)
N_BINS = 10
CALIBRATION_KEYS = ("kind", "family", "n", "n_used", "ks", "ks_pvalue", "coverage_50",
                    "coverage_80", "coverage_95", "coverage_error_max", "pit_hist", "ece",
                    "brier", "reliability")


def heldout_loglik(artifact: ModelArtifact, x, *, event=None, X=None) -> np.ndarray:
    """Per-row held-out log-likelihood: the one place the pipeline scores new rows."""
    return artifact.loglik_rows(x, event=event, X=X)


def pit_summary(u: np.ndarray) -> dict:
    """KS distance from Uniform(0,1), central coverage and a 10-bin histogram of PIT values."""
    ks = stats.kstest(u, "uniform")
    out: dict = {"ks": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}
    errs = []
    for level in COVERAGE_LEVELS:
        lo, hi = (1 - level) / 2, (1 + level) / 2
        cov = float(np.mean((u >= lo) & (u <= hi)))
        out[f"coverage_{round(level * 100)}"] = cov
        errs.append(abs(cov - level))
    out["coverage_error_max"] = float(max(errs))
    hist, _ = np.histogram(u, bins=N_BINS, range=(0.0, 1.0))
    out["pit_hist"] = [int(c) for c in hist]
    return out


def _binary_summary(p: np.ndarray, y: np.ndarray) -> dict:
    """ECE over 10 equal-width bins (weighted by bin count), Brier score, reliability table."""
    idx = np.minimum((p * N_BINS).astype(int), N_BINS - 1)
    table, ece = [], 0.0
    for b in range(N_BINS):
        m = idx == b
        cnt = int(m.sum())
        if cnt == 0:
            continue
        mp, of = float(p[m].mean()), float(y[m].mean())
        ece += cnt / p.size * abs(mp - of)
        table.append({"lo": b / N_BINS, "hi": (b + 1) / N_BINS, "mean_pred": mp,
                      "obs_freq": of, "count": cnt})
    return {"ece": float(ece), "brier": float(np.mean((p - y) ** 2)), "reliability": table}


def randomized_pit(artifact: ModelArtifact, xs, Xs, kind, upper, seed: int, *,
                    discrete: bool) -> np.ndarray:
    """u = lo + V (hi - lo) with [lo, hi] the CDF range the observation pins down."""
    step = 1.0 if discrete else 0.0  # counts: X = x spans (F(x-1), F(x)]
    hi = artifact.cdf(xs, Xs)
    lo = artifact.cdf(xs - step, Xs) if discrete else hi.copy()
    if kind is not None:
        right, left, inter = kind == RIGHT, kind == LEFT, kind == INTERVAL
        hi = np.where(right, 1.0, hi)  # right-censored at x: X >= x (counts) / X > x
        lo = np.where(left, 0.0, lo)
        if inter.any():
            hi = np.where(inter, artifact.cdf(np.where(inter, upper, xs), Xs), hi)
    v = np.random.default_rng(seed).uniform(size=xs.shape)
    return lo + v * (hi - lo)


def pit_values(artifact: ModelArtifact, x, *, event=None, X=None, seed: int = 0) -> np.ndarray:
    """PIT of each row under ``artifact`` (randomized for counts and censored rows, see the
    module doc); not defined for binary outcomes (DataError). Raises DataError on bad rows."""
    fam = artifact.fam
    if fam.outcome == "binary":
        raise DataError("PIT is not defined for a logistic model (use a reliability table)")
    d = make_data(fam, x, event=event, X=X)  # same validation as scoring
    arr = lambda a: None if a is None else np.asarray(a)  # noqa: E731
    u = randomized_pit(artifact, np.asarray(d.x), arr(d.X), arr(d.kind), arr(d.upper), seed,
                       discrete=(fam.outcome == "count"))
    u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
    if not np.isfinite(u).all():
        raise ValueError(f"calibration: the model's CDF is non-finite on "
                         f"{int((~np.isfinite(u)).sum())} held-out row(s)")
    return u


def calibration(artifact: ModelArtifact, x, *, event=None, X=None, seed: int = 0) -> dict:
    """Calibration of ``artifact`` on held-out rows; keys are ``CALIBRATION_KEYS``.

    Metrics that do not apply to the model's kind are ``None`` (e.g. ``ece`` for a continuous
    model, ``ks`` for logistic). ``seed`` drives the randomized PIT of count families.
    Raises ``DataError`` on invalid rows.
    """
    fam = artifact.fam
    out: dict = dict.fromkeys(CALIBRATION_KEYS)
    if fam.outcome == "binary":
        d = make_data(fam, x, event=event, X=X)  # same validation as scoring
        xs, Xs = np.asarray(d.x), None if d.X is None else np.asarray(d.X)
        out.update(kind=fam.outcome, family=fam.name, n=int(d.n), n_used=int(d.n))
        p = np.asarray(artifact.mean(Xs), dtype=np.float64)
        out.update(_binary_summary(np.broadcast_to(p, xs.shape), xs))
        return out
    u = pit_values(artifact, x, event=event, X=X, seed=seed)
    out.update(kind=fam.outcome, family=fam.name, n=int(u.size), n_used=int(u.size))
    out.update(pit_summary(u))
    return out


def summary_metrics(ll_rows, calib: dict | None) -> dict[str, float]:
    """Flat numeric metrics for MLflow: held-out log-likelihood plus scalar calibration numbers.

    Lists (histograms, tables), strings and ``None`` entries are skipped.
    """
    ll = np.asarray(ll_rows, dtype=np.float64).ravel()
    out = {"heldout_n": float(ll.size),
           "heldout_avg_loglik": float(ll.mean()) if ll.size else float("nan"),
           "heldout_sum_loglik": float(ll.sum()),
           # the drift monitor's baseline: how far a window mean may stray without drift
           "heldout_sd_loglik": float(ll.std(ddof=1)) if ll.size > 1 else float("nan")}
    for k, v in (calib or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[k] = float(v)
    return out


__all__ = ["heldout_loglik", "calibration", "pit_summary", "pit_values", "randomized_pit", "summary_metrics",
           "CALIBRATION_KEYS", "COVERAGE_LEVELS"]
