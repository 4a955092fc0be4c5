"""Regression designs fitted on a standard scale, reported on the user's.

A covariate around 1e4 next to its square (1e8) gives a Hessian whose entries span 16 orders
of magnitude: Newton stalls far from the optimum. Fitting on columns centred (when there is an
intercept) and divided by their sd is the same model, re-parametrised linearly:
``eta = X b = Z c`` with ``b = M c``, so estimates map back exactly and the covariance as
``M cov M^T``.
"""

from __future__ import annotations

import numpy as np

from mleops.fit.result import FitResult


def standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, M)``: the standardised design and the map from its coefficients to ``X``'s."""
    X = np.asarray(X, dtype=np.float64)
    p = X.shape[1]
    constant = X.min(axis=0) == X.max(axis=0)
    intercept = next((j for j in range(p) if constant[j] and X[0, j] != 0.0), None)
    centre = X.mean(axis=0) if intercept is not None else np.zeros(p)
    scale = X.std(axis=0)
    M = np.eye(p)
    Z = X.copy()
    for j in range(p):
        if constant[j]:  # (every other column has sd > 0)
            continue
        Z[:, j] = (X[:, j] - centre[j]) / scale[j]
        M[j, j] = 1.0 / scale[j]
        if intercept is not None:  # the centring moves into the intercept
            M[intercept, j] = -centre[j] / (scale[j] * X[0, intercept])
    return Z, M


def to_user_scale(result: FitResult, M: np.ndarray) -> FitResult:
    """``result`` of a fit on the standardised design, with coefficients (and their
    covariance) on the original columns; other parameters (a dispersion) untouched."""
    k = len(result.param_names)
    T = np.eye(k)
    T[: M.shape[0], : M.shape[1]] = M
    values = T @ result.values
    cov = result.cov
    if np.isfinite(cov).all():
        cov = T @ cov @ T.T
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    result.params = {n: float(v) for n, v in zip(result.param_names, values)}
    result.se = {n: float(v) for n, v in zip(result.param_names, se)}
    result.cov = cov
    return result


__all__ = ["standardise", "to_user_scale"]
