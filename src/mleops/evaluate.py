"""Held-out evaluation: per-row log-likelihood and calibration of a fitted model.

The gate compares models by their per-row held-out log-likelihood (a proper scoring rule), but
a model can win on likelihood and still be miscalibrated, so calibration is measured too:

* continuous families: probability integral transform u = F(x), uniform under a correct model;
* count families: randomized PIT u = F(x-1) + V (F(x) - F(x-1)), V ~ U(0,1), which is exactly
  uniform under a correct discrete model (the plain PIT is not);
* logistic: expected calibration error, Brier score and a reliability table.

Right-censored rows (``event == 0``) only bound the value, so they are left out of the PIT and
coverage; ``n_used`` says how many rows remained. (Under heavy censoring that selection skews
the PIT towards small values even for a correct model: read the numbers with that in mind.)
Every number returned is a plain float/int/list so the dict can go straight into JSON/MLflow.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .artifact import ModelArtifact
from .data import EXACT, make_data

#: central-interval levels whose coverage is reported (as ``coverage_50`` ...)
COVERAGE_LEVELS = (0.5, 0.8, 0.95)
N_BINS = 10
CALIBRATION_KEYS = ("kind", "family", "n", "n_used", "ks", "ks_pvalue", "coverage_50",
                    "coverage_80", "coverage_95", "coverage_error_max", "pit_hist", "ece",
                    "brier", "reliability")


def heldout_loglik(artifact: ModelArtifact, x, *, event=None, X=None) -> np.ndarray:
    """Per-row held-out log-likelihood: the one place the pipeline scores new rows."""
    return artifact.loglik_rows(x, event=event, X=X)


def _kind(artifact: ModelArtifact) -> str:
    fam = artifact.fam
    if fam.name == "logistic":
        return "binary"
    return "count" if fam.discrete else "continuous"


def _pit_summary(u: np.ndarray) -> dict:
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


def calibration(artifact: ModelArtifact, x, *, event=None, X=None, seed: int = 0) -> dict:
    """Calibration of ``artifact`` on held-out rows; keys are ``CALIBRATION_KEYS``.

    Metrics that do not apply to the model's kind are ``None`` (e.g. ``ece`` for a continuous
    model, ``ks`` for logistic). ``seed`` drives the randomized PIT of count families.
    Raises ``DataError`` on invalid rows and ``ValueError`` if no uncensored row is left.
    """
    fam = artifact.fam
    d = make_data(fam, x, event=event, X=X)  # same validation as scoring
    xs = np.asarray(d.x)
    Xs = None if d.X is None else np.asarray(d.X)
    keep = np.ones(xs.shape, bool) if d.kind is None else np.asarray(d.kind) == EXACT
    n_used = int(keep.sum())
    if n_used == 0:
        raise ValueError("calibration: every held-out row is censored (event == 0); "
                         "nothing to calibrate on")
    xs = xs[keep]
    Xs = None if Xs is None else Xs[keep]
    kind = _kind(artifact)
    out: dict = dict.fromkeys(CALIBRATION_KEYS)
    out.update(kind=kind, family=fam.name, n=int(d.n), n_used=n_used)
    if kind == "binary":
        p = np.asarray(artifact.mean(Xs), dtype=np.float64)
        out.update(_binary_summary(np.broadcast_to(p, xs.shape), xs))
        return out
    if kind == "count":
        hi = artifact.cdf(xs, Xs)
        lo = artifact.cdf(xs - 1.0, Xs)  # F(-1) = 0 for x = 0
        v = np.random.default_rng(seed).uniform(size=xs.shape)
        u = lo + v * (hi - lo)
    else:
        u = artifact.cdf(xs, Xs)
    u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
    if not np.isfinite(u).all():
        raise ValueError(f"calibration: the model's CDF is non-finite on "
                         f"{int((~np.isfinite(u)).sum())} held-out row(s)")
    out.update(_pit_summary(u))
    return out


def summary_metrics(ll_rows, calib: dict | None) -> dict[str, float]:
    """Flat numeric metrics for MLflow: held-out log-likelihood plus scalar calibration numbers.

    Lists (histograms, tables), strings and ``None`` entries are skipped.
    """
    ll = np.asarray(ll_rows, dtype=np.float64).ravel()
    out = {"heldout_n": float(ll.size),
           "heldout_avg_loglik": float(ll.mean()) if ll.size else float("nan"),
           "heldout_sum_loglik": float(ll.sum())}
    for k, v in (calib or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[k] = float(v)
    return out


__all__ = ["heldout_loglik", "calibration", "summary_metrics", "CALIBRATION_KEYS",
           "COVERAGE_LEVELS"]
