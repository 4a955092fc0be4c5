"""Exponential families fit from sufficient statistics computed in one pass over the data.

For exact (uncensored, untruncated) one-sample data of these families the log-likelihood is
a function of a handful of weighted sums, so the MLE, the Newton verification and the
observed information all cost O(1) after one pass - instead of one pass per iteration.
Each entry: ``stats(x, w) -> vector``, ``loglik(p, s)`` (identical to the row-wise sum),
``mle(s) -> p`` (closed form or a 1-D solve).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln, polygamma

from mleops.fit.data import in_place

_LOG_2PI = 1.8378770664093453


class SuffStats(NamedTuple):
    stats: Callable
    loglik: Callable
    mle: Callable


def _centred(v, w, v0):
    """(W, mean, M2) from sums shifted by v0 ~ a typical value: no cancellation for data far
    from zero. (v0 is passed in, not sliced from v, so v is never materialised.)"""
    W = jnp.sum(w)
    s1 = jnp.sum(w * (v - v0))
    s2 = jnp.sum(w * (v - v0) ** 2)
    m = s1 / W
    return W, v0 + m, jnp.maximum(s2 - W * m * m, 0.0)


def _normal_ll(mu, sigma, W, m, M2):
    return -0.5 * W * _LOG_2PI - W * jnp.log(sigma) - (M2 + W * (m - mu) ** 2) / (2 * sigma**2)


def _normal_stats(x, w):
    return jnp.stack(_centred(x, w, x[0]))


def _lognormal_stats(x, w):
    W, m, M2 = _centred(jnp.log(x), w, jnp.log(x[0]))
    return jnp.stack([W, m, M2, W * m])  # last: sum w log x (the Jacobian term)


def gamma_shape(s, iters: int = 30):
    """Solve log(a) - digamma(a) = s (> 0) by Newton from Minka's approximation."""
    a0 = (3 - s + jnp.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)

    def step(_, a):
        f = jnp.log(a) - digamma(a) - s
        fp = 1 / a - polygamma(1, a)
        return jnp.maximum(a - f / fp, 0.5 * a)

    return jax.lax.fori_loop(0, iters, step, a0)


def _gamma_mle(s):
    W, Sx, Slx = s
    m = Sx / W
    a = gamma_shape(jnp.maximum(jnp.log(m) - Slx / W, 1e-14))
    return jnp.stack([a, m / a])


SUFFICIENT: dict[str, SuffStats] = {
    "normal": SuffStats(
        _normal_stats,
        lambda p, s: _normal_ll(p[0], p[1], *s),
        lambda s: jnp.stack([s[1], jnp.sqrt(jnp.maximum(s[2] / s[0], 1e-300))])),
    "lognormal": SuffStats(
        _lognormal_stats,
        lambda p, s: _normal_ll(jnp.log(p[1]), p[0], s[0], s[1], s[2]) - s[3],
        lambda s: jnp.stack([jnp.sqrt(jnp.maximum(s[2] / s[0], 1e-300)), jnp.exp(s[1])])),
    "exponential": SuffStats(
        lambda x, w: jnp.stack([jnp.sum(w), jnp.sum(w * x)]),
        lambda p, s: -s[0] * jnp.log(p[0]) - s[1] / p[0],
        lambda s: jnp.stack([s[1] / s[0]])),
    "gamma": SuffStats(
        lambda x, w: jnp.stack([jnp.sum(w), jnp.sum(w * x), jnp.sum(w * jnp.log(x))]),
        lambda p, s: ((p[0] - 1) * s[2] - s[1] / p[1]
                      - s[0] * (p[0] * jnp.log(p[1]) + gammaln(p[0]))),
        _gamma_mle),
    "poisson": SuffStats(
        lambda x, w: jnp.stack([jnp.sum(w), jnp.sum(w * x), jnp.sum(w * gammaln(x + 1))]),
        lambda p, s: s[1] * jnp.log(p[0]) - s[0] * p[0] - s[2],
        lambda s: jnp.stack([jnp.maximum(s[1] / s[0], 1e-12)])),
}


# --- the same statistics as separate sums ---------------------------------------------------
#: families whose statistics are centred moments of v(x), kept as sums of (v - v0) and
#: (v - v0)^2 with v0 a value of the data (no cancellation; additive across batches and
#: processes); True: the statistics end with sum w v (the lognormal Jacobian term)
SHIFTED = {"normal": (lambda x: x, False), "lognormal": (jnp.log, True)}


def _all_sums(name: str, x, w, v0):
    w = jnp.ones_like(x) if w is None else w  # constant inside the kernel: never stored
    if name in SHIFTED:
        v = SHIFTED[name][0](x)
        return jnp.stack([jnp.sum(w), jnp.sum(w * (v - v0)), jnp.sum(w * (v - v0) ** 2)])
    return SUFFICIENT[name].stats(x, w)


@partial(jax.jit, static_argnames=("name", "i"))
def _one_sum(name: str, i: int, x, w, v0):
    return _all_sums(name, x, w, v0)[i]


@functools.cache
def sum_width(name: str) -> int:
    """How many sums ``name`` keeps (cached: finding out runs the statistics eagerly)."""
    return 3 if name in SHIFTED else len(SUFFICIENT[name].stats(jnp.ones(1), jnp.ones(1)))


def shift_of(name: str, x0) -> float:
    """v0 for the shifted sums: v of the data's first value (0 for plain sums)."""
    return float(SHIFTED[name][0](jnp.asarray(x0)[:1])[0]) if name in SHIFTED else 0.0


def sums(name: str, x, w, v0: float) -> np.ndarray:
    """The statistics' sums, one compiled reduction each: XLA on CPU runs a kernel with a
    single reduction vectorised and in parallel, one with several serially (measured: the
    three lognormal sums over 1e6 rows, 2.8 ms apart vs 9.6 ms in one kernel)."""
    return np.asarray([_one_sum(name, i, x, w, v0) for i in range(sum_width(name))])


#: families whose sums are finite exactly when every value is valid for them (finite, and
#: above 0 where the support says so: log 0 is -inf, log of a negative NaN), so the sums can
#: run before any check and the checks only when a sum is not finite
SELF_CHECKING = frozenset({"normal", "lognormal", "gamma"})

@partial(jax.jit, static_argnames=("name", "i"))
def _one_sum_split(name: str, i: int, body, head, head_w, v0):
    return _all_sums(name, body, None, v0)[i] + _all_sums(name, head, head_w, v0)[i]


def sums_in_place(name: str, x: np.ndarray, v0: float) -> np.ndarray:
    """:func:`sums` of unweighted host values without copying them to the device: the rows
    from the first 64-byte boundary are read in place (:func:`mleops.fit.data.in_place`),
    the few before it ride along as an 8-row block with zero weights on the padding. Saves
    the copy (1.1 ms for 1e6 rows, as long as a log pass)."""
    split = in_place(x) if x.ndim == 1 else None
    if split is None:
        return sums(name, jnp.asarray(x), None, v0)
    first, body = split
    k = first.size
    head = np.ones(8)
    head[:k] = first
    head_w = (np.arange(8) < k).astype(np.float64)
    # every family's statistics start with the total weight: here the row count
    return np.asarray([float(x.size)] + [_one_sum_split(name, i, body, head, head_w, v0)
                                         for i in range(1, sum_width(name))])


def stats_from_sums(name: str, s: np.ndarray, v0: float) -> jnp.ndarray:
    """The statistics vector (what ``stats`` returns) from :func:`sums`."""
    if name not in SHIFTED:
        return jnp.asarray(s)
    W, s1, s2 = s
    m = s1 / W
    out = [W, v0 + m, max(s2 - W * m * m, 0.0)]
    return jnp.asarray(out + ([W * (v0 + m)] if SHIFTED[name][1] else []))
