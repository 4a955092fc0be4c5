"""Uncertainty from the observed Fisher information, and likelihood-ratio tests."""

from __future__ import annotations

import math

import jax
import numpy as np

from .families import Family


def natural_covariance(fam: Family, theta: jax.Array, H_theta: jax.Array) -> tuple[np.ndarray, str]:
    """Covariance of the natural parameters: delta method on inv(-H) in unconstrained space.

    At the MLE this equals inverting the observed information in natural coordinates, but it
    stays defined for reparameterisations that are not one-to-one (mixture weights).
    Returns (cov, message); a singular information matrix gives inf variances and a message.
    """
    info = -0.5 * (np.asarray(H_theta) + np.asarray(H_theta).T)
    J = np.asarray(jax.jacfwd(fam.to_natural)(theta))
    try:
        L = np.linalg.cholesky(info)
        cov_t = np.linalg.inv(L).T @ np.linalg.inv(L)
        msg = ""
    except np.linalg.LinAlgError:
        cov_t = np.full(info.shape, np.inf)
        msg = "observed information is not positive definite: standard errors are unavailable"
    with np.errstate(invalid="ignore"):
        cov = J @ cov_t @ J.T
    if not np.isfinite(cov).all():
        cov = np.where(np.isfinite(cov), cov, np.inf)
    return cov, msg


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


__all__ = ["natural_covariance", "lr_test", "wald_z"]
