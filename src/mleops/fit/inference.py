"""Tests between fits: likelihood-ratio tests of nested models and Wald tests.

(Standard errors themselves come from the observed information inside the fit kernels.)
"""

from __future__ import annotations

import math


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


__all__ = ["lr_test", "wald_z"]
