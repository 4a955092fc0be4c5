"""Tests between fits (likelihood-ratio, Wald) and the long-run variance of a series.

(Standard errors themselves come from the observed information inside the fit kernels.)
"""

from __future__ import annotations

import math

import numpy as np

#: lags of the Newey-West long-run variance (Bartlett weights 1 - l/(LAGS+1))
LAGS = 10


def lr_test(restricted, full, df: int | None = None) -> dict:
    """Likelihood-ratio test of a nested (restricted) fit against a fuller one.

    ``df`` defaults to the difference in free parameters. Returns statistic, df, p-value.
    """
    from scipy.stats import chi2

    df = full.n_params - restricted.n_params if df is None else df
    if df <= 0:
        raise ValueError("the full model must have more free parameters than the restricted one")
    stat = max(2.0 * (full.loglik - restricted.loglik), 0.0)
    return {"statistic": stat, "df": df, "p_value": float(chi2.sf(stat, df))}


def wald_z(estimate: float, se: float, null: float = 0.0) -> dict:
    """Two-sided Wald test of one parameter."""
    z = (estimate - null) / se
    return {"z": z, "p_value": math.erfc(abs(z) / math.sqrt(2))}


def newey_west(x, lags: int = LAGS) -> tuple[float, float, float, float]:
    """Pieces of the long-run variance of ``x`` (in order) around its own mean:
    ``(ss, df, nw, den)`` with ``ss/df`` the plain variance and ``nw/den`` the Newey-West one.

    Sums of pieces over chunks give the pooled estimates. Deviations from the chunk's own mean
    sum to zero, which biases their autocovariances down by about the variance over the
    chunk's length; ``den`` takes that out exactly for independent values (nearly, for
    correlated ones). Lags stop at a third of the chunk, where the correction stays small.
    """
    u = np.asarray(x, dtype=float)
    m = u.size
    if m < 2:
        return 0.0, 0.0, 0.0, 0.0
    e = u - u.mean()
    ss = float(e @ e)
    nw, den = ss, float(m - 1)
    for k in range(1, min(lags, m // 3) + 1):
        w = 1.0 - k / (lags + 1)
        nw += 2.0 * w * float(e[k:] @ e[:-k])
        den -= 2.0 * w * (m - k) / m
    return ss, float(m - 1), nw, den


__all__ = ["LAGS", "lr_test", "newey_west", "wald_z"]
