"""Start values that are (nearly) the MLE, computed from a few reductions over the data.

Exponential families (normal, lognormal, exponential, poisson, gamma) reduce to sufficient
statistics; the Weibull shape solves a 1-D profile equation needing three reductions per
iteration. The Newton solver then only *verifies* convergence from here (one Hessian, which
the standard errors need anyway), so fast paths never bypass the convergence report.
Used only for exact (uncensored, untruncated) one-sample data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, polygamma

from ..data import Data
from ..families import Family


def _gamma_shape(s, iters: int = 30):
    """Solve log(a) - digamma(a) = s (> 0) by Newton from Minka's approximation."""
    a0 = (3 - s + jnp.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)

    def step(_, a):
        f = jnp.log(a) - digamma(a) - s
        fp = 1 / a - polygamma(1, a)
        return jnp.maximum(a - f / fp, 0.5 * a)

    return jax.lax.fori_loop(0, iters, step, a0)


def _weibull_profile(lx, w, c0, iters: int):
    """Newton on g(c) = 1/c - S1/S0 + mean(log x) = 0 with S_j = sum w x^c (log x)^j."""
    W = jnp.sum(w)
    mlx = jnp.sum(w * lx) / W
    shift = jnp.max(jnp.where(w > 0, lx, -jnp.inf))
    lxc = lx - shift  # exp(c * lxc) <= 1: no overflow for any c

    def sums(c):
        z = w * jnp.exp(c * lxc)
        return jnp.sum(z), jnp.sum(z * lxc), jnp.sum(z * lxc * lxc)

    def step(state):
        c, it, _ = state
        s0, s1, s2 = sums(c)
        a = s1 / s0
        g = 1 / c - a + (mlx - shift)
        gp = -1 / c**2 - (s2 / s0 - a * a)
        c_new = c - g / gp
        c_new = jnp.where(c_new > 0, c_new, 0.5 * c)
        return c_new, it + 1, jnp.abs(c_new - c) <= 1e-13 * c

    c, it, _ = jax.lax.while_loop(lambda s: (s[1] < iters) & ~s[2], step,
                                  (c0, jnp.asarray(0), jnp.asarray(False)))
    s0 = sums(c)[0]
    return c, jnp.exp(shift + jnp.log(s0 / W) / c), it


def fast_start(fam: Family, d: Data, p0: jax.Array):
    """Natural-parameter start for ``fam`` on exact data and the iterations it took."""
    name = fam.name
    zero = jnp.asarray(0)
    if name == "gamma":
        W = jnp.sum(d.w)
        m = jnp.sum(d.w * d.x) / W
        s = jnp.maximum(jnp.log(m) - jnp.sum(d.w * jnp.log(d.x)) / W, 1e-14)
        a = _gamma_shape(s)
        return jnp.stack([a, m / a]), zero
    if name == "weibull":
        c, scale, it = _weibull_profile(jnp.log(d.x), d.w, p0[0], 100)
        return jnp.stack([c, scale]), it
    return p0, zero  # normal, lognormal, exponential, poisson: init is the closed-form MLE


def has_fast_path(fam: Family, d: Data) -> bool:
    return (d.kind is None and d.trunc_lo is None and not fam.uses_covariates
            and fam.name in {"gamma", "weibull", "normal", "lognormal", "exponential",
                             "poisson"})
