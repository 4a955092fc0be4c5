"""Regression designs fitted on a standard scale, reported on the user's.

A covariate around 1e4 next to its square (1e8) gives a Hessian whose entries span 16 orders
of magnitude: Newton stalls far from the optimum. Fitting on columns centred (when there is an
intercept) and divided by their sd is the same model, re-parametrised linearly:
``eta = X b = Z c`` with ``b = M c``, so estimates map back exactly and the covariance as
``M cov M^T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mleops.fit.result import FitResult


@dataclass(frozen=True)
class DesignStats:
    """Per-column count, mean, centred sum of squares, min and max: what standardising needs,
    mergeable (Chan et al.'s pairwise update), so a streamed fit gets the in-memory scale."""

    n: float
    mean: np.ndarray
    m2: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray) -> DesignStats:
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        return cls(float(X.shape[0]), mean, ((X - mean) ** 2).sum(axis=0), X.min(axis=0),
                   X.max(axis=0))

    @classmethod
    def empty(cls, p: int) -> DesignStats:
        return cls(0.0, np.zeros(p), np.zeros(p), np.full(p, np.inf), np.full(p, -np.inf))

    def merge(self, o: DesignStats) -> DesignStats:
        n = self.n + o.n
        if not n:
            return self
        delta = o.mean - self.mean
        return DesignStats(n, self.mean + delta * (o.n / n),
                           self.m2 + o.m2 + delta ** 2 * (self.n * o.n / n),
                           np.minimum(self.lo, o.lo), np.maximum(self.hi, o.hi))

    def to_vector(self) -> np.ndarray:
        return np.concatenate([[self.n], self.mean, self.m2, self.lo, self.hi])

    @classmethod
    def from_vector(cls, v: np.ndarray) -> DesignStats:
        p = (len(v) - 1) // 4
        return cls(float(v[0]), *(np.asarray(v[1 + i * p:1 + (i + 1) * p]) for i in range(4)))

    @property
    def _intercept(self) -> int | None:
        constant = self.lo == self.hi
        return next((j for j in range(self.mean.size) if constant[j] and self.lo[j] != 0.0),
                    None)

    def _centre_scale(self) -> tuple[np.ndarray, np.ndarray]:
        centre = self.mean if self._intercept is not None else np.zeros(self.mean.size)
        return centre, np.sqrt(self.m2 / max(self.n, 1.0))

    def map(self) -> np.ndarray:
        """``M`` with ``b = M c``: standardised coefficients ``c`` to the user's ``b``."""
        centre, scale = self._centre_scale()
        intercept, M = self._intercept, np.eye(self.mean.size)
        for j in np.flatnonzero(self.lo != self.hi):
            M[j, j] = 1.0 / scale[j]
            if intercept is not None:  # the centring moves into the intercept
                M[intercept, j] = -centre[j] / (scale[j] * self.lo[intercept])
        return M

    def apply(self, X: np.ndarray) -> np.ndarray:
        """The standardised columns (constant columns as they are)."""
        centre, scale = self._centre_scale()
        moving = self.lo != self.hi
        Z = np.array(X, dtype=np.float64)
        Z[:, moving] = (Z[:, moving] - centre[moving]) / scale[moving]
        return Z


def standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, M)``: the standardised design and the map from its coefficients to ``X``'s."""
    stats = DesignStats.of(X)
    return stats.apply(X), stats.map()


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


__all__ = ["DesignStats", "standardise", "to_user_scale"]
