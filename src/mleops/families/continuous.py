"""Continuous one-sample families, parameterised as scipy.stats does (so users can compare).

normal(loc, scale), lognormal(shape=s, scale=exp(mu)), exponential(scale),
gamma(shape=a, scale), weibull(shape=c, scale) [scipy weibull_min], student_t(df, loc, scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.scipy import special as jsp
from jax.scipy import stats as jst

from mleops.families import special
from mleops.families.base import Family, _mean_var
from mleops.families.constraints import positive, real


@dataclass(frozen=True)
class Normal(Family):
    name = "normal"
    param_names = ("loc", "scale")
    constraints = (real, positive)

    def logpdf(self, x, p, X=None):
        return jst.norm.logpdf(x, p[0], p[1])

    def logcdf(self, x, p, X=None):
        return jst.norm.logcdf(x, p[0], p[1])

    def logsf(self, x, p, X=None):
        return jst.norm.logcdf(-x, -p[0], p[1])

    def ppf(self, q, p, X=None):
        return jst.norm.ppf(q, p[0], p[1])

    def sample(self, key, p, shape, X=None):
        return p[0] + p[1] * jax.random.normal(key, shape, jnp.float64)

    def mean(self, p, X=None):
        return p[0]

    def init(self, x, w, X=None):
        m, v = _mean_var(x, w)
        return jnp.stack([m, jnp.sqrt(jnp.maximum(v, 1e-300))])


@dataclass(frozen=True)
class LogNormal(Family):
    name = "lognormal"
    lower = 0.0
    param_names = ("shape", "scale")
    constraints = (positive, positive)

    lower_open = True

    def logpdf(self, x, p, X=None):
        lx = jnp.log(x)
        return jst.norm.logpdf(lx, jnp.log(p[1]), p[0]) - lx

    def logcdf(self, x, p, X=None):
        return jst.norm.logcdf((jnp.log(x) - jnp.log(p[1])) / p[0])

    def logsf(self, x, p, X=None):
        return jst.norm.logcdf((jnp.log(p[1]) - jnp.log(x)) / p[0])

    def ppf(self, q, p, X=None):
        return p[1] * jnp.exp(p[0] * jst.norm.ppf(q))

    def mean(self, p, X=None):
        return p[1] * jnp.exp(0.5 * p[0] ** 2)

    def init(self, x, w, X=None):
        m, v = _mean_var(jnp.log(x), w)
        return jnp.stack([jnp.sqrt(jnp.maximum(v, 1e-300)), jnp.exp(m)])


@dataclass(frozen=True)
class Exponential(Family):
    name = "exponential"
    lower = 0.0
    param_names = ("scale",)
    constraints = (positive,)

    def logpdf(self, x, p, X=None):
        return jst.expon.logpdf(x, scale=p[0])

    def logcdf(self, x, p, X=None):
        return special.log1mexp(-jnp.maximum(x, 0.0) / p[0])

    def logsf(self, x, p, X=None):
        return -jnp.maximum(x, 0.0) / p[0]

    def ppf(self, q, p, X=None):
        return -p[0] * jnp.log1p(-q)

    def mean(self, p, X=None):
        return p[0]

    def init(self, x, w, X=None):
        return jnp.stack([jnp.sum(w * x) / jnp.sum(w)])


@dataclass(frozen=True)
class Gamma(Family):
    name = "gamma"
    lower = 0.0
    param_names = ("shape", "scale")
    constraints = (positive, positive)

    lower_open = True

    def logpdf(self, x, p, X=None):
        return jst.gamma.logpdf(x, p[0], scale=p[1])

    def logcdf(self, x, p, X=None):
        return jnp.log(special.gammainc(p[0], jnp.maximum(x, 0.0) / p[1]))

    def logsf(self, x, p, X=None):
        return jnp.log(special.gammaincc(p[0], jnp.maximum(x, 0.0) / p[1]))

    def sample(self, key, p, shape, X=None):
        return p[1] * jax.random.gamma(key, p[0], shape, jnp.float64)

    def mean(self, p, X=None):
        return p[0] * p[1]

    def init(self, x, w, X=None):
        # Minka's closed-form approximation from the sufficient statistics.
        sw = jnp.sum(w)
        m = jnp.sum(w * x) / sw
        s = jnp.log(m) - jnp.sum(w * jnp.log(x)) / sw
        s = jnp.maximum(s, 1e-12)
        a = (3 - s + jnp.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
        return jnp.stack([a, m / a])


@dataclass(frozen=True)
class Weibull(Family):
    """scipy.stats.weibull_min with loc=0: shape c, scale."""

    name = "weibull"
    lower = 0.0
    param_names = ("shape", "scale")
    constraints = (positive, positive)

    lower_open = True

    def logpdf(self, x, p, X=None):
        lz = jnp.log(x) - jnp.log(p[1])
        return jnp.log(p[0]) - jnp.log(p[1]) + (p[0] - 1) * lz - jnp.exp(p[0] * lz)

    def logsf(self, x, p, X=None):
        return -((jnp.maximum(x, 0.0) / p[1]) ** p[0])

    def logcdf(self, x, p, X=None):
        return special.log1mexp(self.logsf(x, p))

    def ppf(self, q, p, X=None):
        return p[1] * (-jnp.log1p(-q)) ** (1 / p[0])

    def mean(self, p, X=None):
        return p[1] * jnp.exp(jsp.gammaln(1 + 1 / p[0]))

    def init(self, x, w, X=None):
        # Moments of log x: sd(log x) = pi / (sqrt 6 c).
        m, v = _mean_var(jnp.log(x), w)
        c = jnp.pi / jnp.sqrt(6 * jnp.maximum(v, 1e-300))
        return jnp.stack([c, jnp.exp(m + 0.5772156649015329 / c)])


@dataclass(frozen=True)
class StudentT(Family):
    name = "student_t"
    param_names = ("df", "loc", "scale")
    constraints = (positive, real, positive)
    limit_family = "normal"  # df -> inf: tails no heavier than normal

    def at_limit(self, p):
        return bool(p[0] > 1e6)

    def logpdf(self, x, p, X=None):
        return jst.t.logpdf(x, p[0], p[1], p[2])

    def _cdf_tails(self, x, p):
        z = (x - p[1]) / p[2]
        tail = 0.5 * special.betainc(p[0] / 2, 0.5, p[0] / (p[0] + z * z))  # P(T > |z|)
        return z, tail

    def logcdf(self, x, p, X=None):
        z, tail = self._cdf_tails(x, p)
        return jnp.where(z < 0, jnp.log(tail), jnp.log1p(-tail))

    def logsf(self, x, p, X=None):
        z, tail = self._cdf_tails(x, p)
        return jnp.where(z > 0, jnp.log(tail), jnp.log1p(-tail))

    def sample(self, key, p, shape, X=None):
        return p[1] + p[2] * jax.random.t(key, p[0], shape, jnp.float64)

    def mean(self, p, X=None):
        return p[1]

    def init(self, x, w, X=None):
        # Robust start: median / MAD scale, moderate df. A strided subsample of <= 4096 rows
        # is plenty for a start and avoids sorting millions of values.
        step = max(1, x.shape[0] // 4096)
        xs, ws = x[::step], w[::step]
        med = jnp.nanmedian(jnp.where(ws > 0, xs, jnp.nan))
        mad = jnp.nanmedian(jnp.where(ws > 0, jnp.abs(xs - med), jnp.nan))
        return jnp.stack([jnp.asarray(5.0), med, jnp.maximum(1.4826 * mad, 1e-12)])
