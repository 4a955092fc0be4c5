"""MLEs on the boundary, or none at all: found, and reported as such, never as a normal fit.

Three ways a "converged" optimiser can mislead:

* the supremum is at an edge of the parameter space where a simpler *limit* family lives
  (negative binomial -> Poisson as n -> inf on counts that are not over-dispersed; Student t
  -> normal as df -> inf). The optimiser drifts towards the edge and stops anywhere, with a
  log-likelihood that round-off can even push above the limit's (then AIC and LR tests lie).
  Every fit of such a family also fits the limit; when the limit is at least as good, the
  result says "boundary", carries the limit's fit, and reports the limit's log-likelihood
  (the supremum) so model comparison stays right;
* no finite MLE exists (separation in a logistic regression, a generalized Pareto shape
  below -1): :meth:`Family.boundary` says why;
* constant data, for families whose scale would collapse to 0: refused up front
  (:func:`check_spread`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from mleops.errors import ConvergenceWarning, DataError, MleopsError
from mleops.families import Family
from mleops.fit.result import FitResult

#: a limit at least this close (relative to 1 + |loglik|) is "at least as good"
LIMIT_RTOL = 1e-7


class BoundaryWarning(ConvergenceWarning):
    """The MLE is on the boundary of the parameter space or does not exist."""


def check_spread(fam: Family, x: np.ndarray, w: np.ndarray | None, exact: bool,
                 count: int | None = None) -> None:
    """Every row equal: a family with a scale and a shape has no MLE there (the scale runs
    to 0 and the likelihood to +inf). One clear error for all of them, up front. ``count``:
    how many rows ``x`` stands for (a streamed fit passes two copies of the one value)."""
    if fam.discrete or fam.n_params < 2 or not exact or fam.uses_covariates:
        return
    if x.size > 1 and (x[:64] != x[0]).any():
        return  # the common case, without a pass over the data
    rows = x if w is None else x[np.asarray(w) > 0]
    if rows.size and rows.min() == rows.max():
        raise DataError(f"all {count or rows.size} values equal {rows[0].item()!r}: the {fam.name} "
                        f"MLE does not exist (its scale would shrink to 0 and the likelihood "
                        f"grow without bound); fit a degenerate model or check the data")


def with_boundary(fam: Family, result: FitResult, x: np.ndarray, X: np.ndarray | None,
                  fit_limit: Callable[[Family], FitResult],
                  counts: np.ndarray | None = None) -> FitResult:
    """``result`` with its boundary findings: the limit family's fit and the reason.
    ``counts``: the family's boundary row statistics over every row (a streamed fit's)."""
    reasons = []
    if reason := fam.boundary(result.values, x, X, counts):
        reasons.append(reason)
    if fam.limit_family:
        from mleops.families import get_family

        lim = get_family(fam.limit_family, **fam.limit_options())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                limit = fit_limit(lim)
        except MleopsError:
            limit = None
        if limit is not None:
            result.limit = {"family": lim.name, "params": limit.params,
                            "loglik": limit.loglik, "converged": limit.converged,
                            "lr_statistic": max(2.0 * (result.loglik - limit.loglik), 0.0)}
            ran = fam.at_limit(result.values)
            if ran or limit.loglik >= result.loglik - LIMIT_RTOL * (1.0 + abs(result.loglik)):
                why = ("the parameters ran to it" if ran else
                       f"it fits as well (log-likelihood {limit.loglik:.6f} vs "
                       f"{result.loglik:.6f})")
                reasons.append(
                    f"MLE on the boundary, at the {lim.name} limit: {why}. The {fam.name} "
                    f"estimates are wherever the optimiser stopped on the way to the edge of "
                    f"their space; the log-likelihood reported is the limit's (the supremum): "
                    f"use {lim.name}")
                result.loglik = limit.loglik  # the supremum; anything above it is round-off
                result.limit["lr_statistic"] = 0.0
    if reasons:
        result.boundary = "; ".join(reasons)
        result.converged = False
        result.message = "; ".join(m for m in (result.boundary, result.message) if m)
        warnings.warn(f"{fam.name}: {result.boundary}", BoundaryWarning, stacklevel=3)
    return result


__all__ = ["LIMIT_RTOL", "BoundaryWarning", "check_spread", "with_boundary"]
