"""Count families: poisson(mu) and negative binomial(n, p) as in scipy.stats.

Censoring convention for counts: right-censored at x means X >= x (e.g. demand that hit a
stock-out), left-censored means X <= x.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.scipy import stats as jst

from mleops.families import special
from mleops.families.base import Family, _mean_var
from mleops.families.constraints import positive, unit_interval


def _count_log(x, tail, below):
    """log of a count CDF/SF ``tail(k)`` at k = floor(x); ``below`` where k < 0.

    Evaluated at k >= 0 only, so masked rows (e.g. "X >= 0" right-censoring) keep finite
    derivatives of every order.
    """
    k = jnp.floor(x)
    return jnp.where(k < 0, below, jnp.log(tail(jnp.maximum(k, 0.0))))


@dataclass(frozen=True)
class Poisson(Family):
    name = "poisson"
    discrete = True
    lower = 0.0
    param_names = ("mu",)
    constraints = (positive,)

    def logpdf(self, x, p, X=None):
        return jst.poisson.logpmf(x, p[0])

    def logcdf(self, x, p, X=None):
        return _count_log(x, lambda k: special.gammaincc(k + 1, p[0]), -jnp.inf)

    def logsf(self, x, p, X=None):
        return _count_log(x, lambda k: special.gammainc(k + 1, p[0]), 0.0)

    def sample(self, key, p, shape, X=None):
        return jax.random.poisson(key, p[0], shape).astype(jnp.float64)

    def mean(self, p, X=None):
        return p[0]

    def init(self, x, w, X=None):
        return jnp.stack([jnp.maximum(jnp.sum(w * x) / jnp.sum(w), 1e-12)])


@dataclass(frozen=True)
class NegativeBinomial(Family):
    """scipy.stats.nbinom(n, p): number of failures before the n-th success."""

    name = "negbinom"
    discrete = True
    lower = 0.0
    param_names = ("n", "p")
    constraints = (positive, unit_interval)
    limit_family = "poisson"  # n -> inf with n (1 - p) / p fixed: counts not over-dispersed

    def at_limit(self, p):
        # variance / mean - 1 = (1 - p) / p: at 1e-6 (as Student t's df 1e6) no data set can
        # tell it from Poisson, and past it the log-pmf's gammaln differences are round-off
        # that can put the likelihood above the Poisson supremum (seen at 1 - p = 3e-8)
        return bool(p[1] > 1 - 1e-6)

    def logpdf(self, x, p, X=None):
        return jst.nbinom.logpmf(x, p[0], p[1])

    def logcdf(self, x, p, X=None):
        return _count_log(x, lambda k: special.betainc(p[0], k + 1, p[1]), -jnp.inf)

    def logsf(self, x, p, X=None):
        return _count_log(x, lambda k: special.betainc(k + 1, p[0], 1 - p[1]), 0.0)

    def sample(self, key, p, shape, X=None):
        k1, k2 = jax.random.split(key)
        lam = jax.random.gamma(k1, p[0], shape, jnp.float64) * (1 - p[1]) / p[1]
        return jax.random.poisson(k2, lam, shape).astype(jnp.float64)

    def mean(self, p, X=None):
        return p[0] * (1 - p[1]) / p[1]

    def init(self, x, w, X=None):
        m, v = _mean_var(x, w)
        m = jnp.maximum(m, 1e-6)
        v = jnp.maximum(v, m * 1.05)  # method of moments needs over-dispersion
        q = m / v
        return jnp.stack([m * q / (1 - q), q])
