"""Per-row log-likelihood with censoring and truncation, in log space throughout.

A row contributes log f(x) (exact), log S(x) (right), log F(x) (left), log P(x < X <= u)
(interval), minus log P(lo < X <= hi) under truncation. Intervals are half-open (x, u] for
every family, as lifelines' ``S(L) - S(R)`` and R's ``Surv(type="interval2")``: for counts
P(x < X <= u) = F(u) - F(x), so interval (1, 3] holds the counts 2 and 3. Right-censored
counts at x mean "at least x" (X >= x: a count cut off by a reporting cap); truncation
(lo, hi] keeps lo itself out, so ``truncation=(0, None)`` is the zero-truncated model.
Masked branches are evaluated at in-support stand-ins so their gradients stay finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mleops.families import Family
from mleops.families.special import log1mexp
from mleops.fit.data import EXACT, INTERVAL, LEFT, RIGHT, Data

_LOG_HALF = -0.6931471805599453
_MAX_LOG_RATIO = -1e-12



def log_prob_between(fam: Family, a, b, p, X, stand_in):
    """log P(a < X <= b), stable in both tails; a may be -inf and b +inf.

    ``a`` at the lower end of the support still counts for counts: P(X <= 0) = P(X = 0) > 0
    (for a density F(lower) = 0, and the stand-in avoids log 0)."""
    a_in = ((a >= fam.lower) if fam.discrete else (a > fam.lower)) & jnp.isfinite(a)
    b_in = jnp.isfinite(b)
    a_s = jnp.where(a_in, a, stand_in)
    b_s = jnp.where(b_in, b, stand_in)
    lca = jnp.where(a_in, fam.logcdf(a_s, p, X), -jnp.inf)
    lsa = jnp.where(a_in, fam.logsf(a_s, p, X), 0.0)
    lcb = jnp.where(b_in, fam.logcdf(b_s, p, X), 0.0)
    lsb = jnp.where(b_in, fam.logsf(b_s, p, X), -jnp.inf)
    lower_half = lcb < _LOG_HALF
    # Rows where this branch is masked out may have a == b (a zero-width stand-in interval):
    # capping the log-ratio below 0 keeps their derivatives finite; real intervals are unaffected.
    v1 = lcb + log1mexp(jnp.minimum(jnp.where(lower_half, lca - lcb, -1.0), _MAX_LOG_RATIO))
    v2 = lsa + log1mexp(jnp.minimum(jnp.where(lower_half, -1.0, lsb - lsa), _MAX_LOG_RATIO))
    return jnp.where(lower_half, v1, v2)


def row_loglik(fam: Family, p: jax.Array, d: Data) -> jax.Array:
    """Unweighted log-likelihood of every row under natural parameters ``p``."""
    ll = fam.logpdf(d.x, p, d.X)
    if d.kind is not None:
        step = 1.0 if fam.discrete else 0.0  # counts: "at least x" is P(X > x - 1)
        right = fam.logsf(d.x - step, p, d.X)
        left = fam.logcdf(d.x, p, d.X)
        ll = jnp.where(d.kind == RIGHT, right, jnp.where(d.kind == LEFT, left, ll))
        if d.upper is not None:
            inter = log_prob_between(fam, d.x, d.upper, p, d.X, d.x)
            ll = jnp.where(d.kind == INTERVAL, inter, ll)
    if d.trunc_lo is not None:
        ll = ll - log_prob_between(fam, d.trunc_lo, d.trunc_hi, p, d.X, d.x)
    return ll


def total_loglik(fam: Family, theta: jax.Array, d: Data) -> jax.Array:
    """Weighted sum over rows, as a function of the *unconstrained* parameters."""
    ll = row_loglik(fam, fam.to_natural(theta), d)
    return jnp.sum(jnp.where(d.w > 0, d.w * ll, 0.0))


__all__ = ["row_loglik", "total_loglik", "log_prob_between", "EXACT", "RIGHT", "LEFT",
           "INTERVAL"]
