"""Regression families over a design matrix ``X`` (intercept column named ``const`` first).

logistic: y in {0,1}, P(y=1) = sigmoid(X b).  poisson_glm: y ~ Poisson(exp(X b)).
negbin_glm: NB2 as in statsmodels ``NegativeBinomial`` - mean exp(X b), var mu + alpha mu^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import stats as jst

from mleops.families import special
from mleops.families.base import Family
from mleops.families.constraints import positive, real
from mleops.families.discrete import _count_log


@dataclass(frozen=True)
class _GLM(Family):
    features: tuple[str, ...] = ("const",)
    uses_covariates = True
    discrete = True
    batchable = False  # each series would need its own design matrix
    lower = 0.0

    @property
    def param_names(self):
        return tuple(self.features)

    @property
    def constraints(self):
        return (real,) * len(self.features)

    def eta(self, p, X):
        return X @ p[: len(self.features)]

    def describe(self):
        return {"name": self.name, "features": list(self.features)}

    def _irls_start(self, y, w, X, link_y):
        """Weighted least squares of a linearised response: a cheap, good start."""
        sw = jnp.sqrt(w)
        b, *_ = jnp.linalg.lstsq(X * sw[:, None], link_y * sw, rcond=None)
        return b


@dataclass(frozen=True)
class Logistic(_GLM):
    name = "logistic"
    outcome = "binary"  # type: ignore[assignment]

    def check_support(self, x):
        bad = ~((x == 0) | (x == 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return f"logistic responses must be 0 or 1; {int(bad.sum())} are not, first at row {i}: {x[i].item()!r}"
        return None

    def logpdf(self, y, p, X=None):
        eta = self.eta(p, X)
        return y * jax.nn.log_sigmoid(eta) + (1 - y) * jax.nn.log_sigmoid(-eta)

    def logcdf(self, y, p, X=None):
        return jnp.where(y >= 1, 0.0, jax.nn.log_sigmoid(-self.eta(p, X)))

    def logsf(self, y, p, X=None):
        return jnp.where(y >= 1, -jnp.inf, jax.nn.log_sigmoid(self.eta(p, X)))

    def mean(self, p, X=None):
        return jax.nn.sigmoid(self.eta(p, X))

    def sample(self, key, p, shape, X=None):
        return jax.random.bernoulli(key, self.mean(p, X), shape).astype(jnp.float64)

    def ppf(self, q, p, X=None):
        return (q > 1 - self.mean(p, X)).astype(jnp.float64)

    def init(self, y, w, X=None):
        return self._irls_start(y, w, X, 4.0 * (y - 0.5))

    boundary_width = 2

    def boundary_counts(self, p, x, X, w=None):
        """(separated rows, rows): rows fitted at probability within 1e-10 of their 0/1
        response are separated."""
        eta = jnp.asarray(X) @ jnp.asarray(p)[: len(self.features)]
        y = jnp.asarray(x)
        live = jnp.ones_like(y) if w is None else (jnp.asarray(w) > 0).astype(y.dtype)
        separated = ((y == 1) & (eta > 23.0)) | ((y == 0) & (eta < -23.0))
        return jnp.stack([jnp.sum(separated * live), jnp.sum(live)])

    def boundary(self, p, x, X, counts=None):
        """Separation: where the covariates predict some responses exactly, the likelihood
        keeps rising as coefficients grow, so no finite MLE exists (Albert & Anderson 1984).
        Counted over every row: a streamed fit passes its sums, not its first batch's."""
        k, n = (int(v) for v in np.asarray(
            self.boundary_counts(p, x, X) if counts is None else counts))
        if not k:
            return ""
        what = "complete" if k == n else "quasi-complete"
        return (f"no finite maximum-likelihood estimate: {what} separation ({k} of {n} "
                f"rows predicted exactly by the covariates; the coefficients grow without "
                f"bound and their standard errors mean nothing). Drop or merge the separating "
                f"covariates, or use a penalised (Firth) fit")


@dataclass(frozen=True)
class PoissonGLM(_GLM):
    name = "poisson_glm"

    def mean(self, p, X=None):
        return jnp.exp(self.eta(p, X))

    def logpdf(self, y, p, X=None):
        return jst.poisson.logpmf(y, self.mean(p, X))

    def logcdf(self, y, p, X=None):
        return _count_log(y, lambda k: special.gammaincc(k + 1, self.mean(p, X)), -jnp.inf)

    def logsf(self, y, p, X=None):
        return _count_log(y, lambda k: special.gammainc(k + 1, self.mean(p, X)), 0.0)

    def sample(self, key, p, shape, X=None):
        return jax.random.poisson(key, self.mean(p, X), shape).astype(jnp.float64)

    def init(self, y, w, X=None):
        return self._irls_start(y, w, X, jnp.log(y + 0.5))


@dataclass(frozen=True)
class NegBinGLM(_GLM):
    name = "negbin_glm"
    limit_family = "poisson_glm"  # alpha -> 0: no over-dispersion left

    def limit_options(self) -> dict:
        return {"features": self.features}

    def at_limit(self, p):
        return bool(p[-1] < 1e-9)

    @property
    def param_names(self):
        return tuple(self.features) + ("alpha",)

    @property
    def constraints(self):
        return (real,) * len(self.features) + (positive,)

    def _np(self, p, X):
        mu = jnp.exp(self.eta(p, X))
        n = 1.0 / p[-1]
        return n, n / (n + mu)

    def mean(self, p, X=None):
        return jnp.exp(self.eta(p, X))

    def logpdf(self, y, p, X=None):
        n, q = self._np(p, X)
        return jst.nbinom.logpmf(y, n, q)

    def logcdf(self, y, p, X=None):
        n, q = self._np(p, X)
        return _count_log(y, lambda k: special.betainc(n, k + 1, q), -jnp.inf)

    def logsf(self, y, p, X=None):
        n, q = self._np(p, X)
        return _count_log(y, lambda k: special.betainc(k + 1, n, 1 - q), 0.0)

    def sample(self, key, p, shape, X=None):
        n, q = self._np(p, X)
        k1, k2 = jax.random.split(key)
        lam = jax.random.gamma(k1, n, shape, jnp.float64) * (1 - q) / q
        return jax.random.poisson(k2, lam, shape).astype(jnp.float64)

    def init(self, y, w, X=None):
        b = self._irls_start(y, w, X, jnp.log(y + 0.5))
        mu = jnp.exp(X @ b)
        alpha = jnp.sum(w * ((y - mu) ** 2 - mu) / mu**2) / jnp.sum(w)
        return jnp.concatenate([b, jnp.maximum(alpha, 0.05)[None]])
