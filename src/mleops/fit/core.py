"""Jitted fit kernels shared by single, batched (vmapped) and sharded fits.

A kernel returns everything a result needs (estimates, covariance, diagnostics) from one
compiled call, so a fit pays one dispatch and one device-to-host transfer.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mleops.families import Family
from mleops.fit.censored import CENSORED
from mleops.fit.data import Data, with_weights
from mleops.fit.fast import (
    exact_one_sample,
    many_series,
    uses_suffstats,
    weibull_prep,
    weibull_start,
)
from mleops.fit.lbfgs import lbfgs
from mleops.fit.likelihood import total_loglik
from mleops.fit.newton import SolverState, newton
from mleops.fit.reduced import REDUCED, weibull_objective
from mleops.fit.suffstats import SUFFICIENT, stats_from_sums

#: families with an exact profile-likelihood start (a kernel registry, like REDUCED)
PROFILED = {"weibull": weibull_objective}


class KernelOut(NamedTuple):
    state: SolverState
    start_iterations: jax.Array
    params: jax.Array  # natural parameters
    cov: jax.Array  # natural-parameter covariance; NaN where the information is singular


def profiled(fam: Family, d: Data) -> bool:
    """The exact-data profile start applies (its last Newton step is exact to round-off)."""
    return exact_one_sample(fam, d) and fam.name in PROFILED


def objective_and_start(fam: Family, d: Data, right_only: bool = False, censored_idx=None):
    """Objective in unconstrained coordinates, optional analytic (f, g, H), a (near-)MLE
    start where one exists, and the iterations that start took. ``right_only``: the only
    censoring is on the right (the caller checked the codes), so a censored kernel applies;
    ``censored_idx``: the censored rows' positions (``censored.censored_index``; None:
    every row)."""
    zero = jnp.asarray(0)
    if right_only and fam.name in CENSORED:
        return CENSORED[fam.name](fam, d, censored_idx)
    if uses_suffstats(fam, d):
        ss = SUFFICIENT[fam.name]
        s = ss.stats(d.x, d.w)  # the one pass over the data
        return (lambda th: ss.loglik(fam.to_natural(th), s)), None, ss.mle(s), zero
    if profiled(fam, d):
        wp = weibull_prep(d)  # log x once, for the profile start and the verification
        p0, it = weibull_start(wp)
        return (*PROFILED[fam.name](fam, d, wp), p0, it)
    p0 = fam.init(d.x, d.w, d.X)
    if exact_one_sample(fam, d) and fam.name in REDUCED:
        return (*REDUCED[fam.name](fam, d), p0, zero)
    return (lambda th: total_loglik(fam, th, d)), None, p0, zero


def solve(obj, theta0, d: Data, method: str, max_iter: int, tol: float,
          derivs=None, polish: bool = True) -> SolverState:
    if method == "lbfgs":
        return lbfgs(obj, theta0, max_iter=max_iter, scale=jnp.maximum(jnp.sum(d.w), 1.0) * 1e-2)
    return newton(obj, theta0, max_iter=max_iter, tol=tol, derivs=derivs, polish=polish)


def natural_cov_jax(fam: Family, theta, H):
    """Delta-method covariance of natural parameters; NaN where information is singular."""
    J = jax.jacfwd(fam.to_natural)(theta)
    return J @ inverse_pd(-0.5 * (H + H.T)) @ J.T


def inverse_pd(info):
    """The inverse of a positive-definite matrix, NaN where it is not (Cholesky fails); 2x2
    in closed form (no LAPACK in the kernel: see :func:`mleops.fit.newton.eig_sym`)."""
    if info.shape == (2, 2):
        a, b, d = info[0, 0], info[0, 1], info[1, 1]
        det = a * d - b * b
        ok = (a > 0) & (det > 0)  # as Cholesky: both pivots positive
        inv = jnp.array([[d, -b], [-b, a]]) / det
        return jnp.where(ok, inv, jnp.nan)
    L = jnp.linalg.cholesky(info)
    Linv = jax.scipy.linalg.solve_triangular(L, jnp.eye(info.shape[0], dtype=info.dtype),
                                             lower=True)
    return Linv.T @ Linv


def _finish(fam: Family, state: SolverState, it0) -> KernelOut:
    return KernelOut(state, it0, fam.to_natural(state.theta),
                     natural_cov_jax(fam, state.theta, state.H))


def _fit(fam: Family, d: Data, method: str = "newton", max_iter: int = 100,
         tol: float = 1e-12, right_only: bool = False, censored_idx=None) -> KernelOut:
    d = with_weights(d)
    obj, derivs, p0, it0 = objective_and_start(fam, d, right_only, censored_idx)
    theta0 = fam.to_unconstrained(p0)
    return _finish(fam, solve(obj, theta0, d, method, max_iter, tol, derivs,
                              polish=not profiled(fam, d)), it0)


fit_kernel = partial(jax.jit, static_argnames=("fam", "method", "max_iter", "tol",
                                              "right_only"))(_fit)
fit_kernel.__doc__ = "Start + solve + covariance in one compiled call."


@partial(jax.jit, static_argnames=("fam", "max_iter", "tol"))
def suff_kernel(fam: Family, s, max_iter: int = 100, tol: float = 1e-12) -> KernelOut:
    """The fit from sufficient statistics ``s`` (computed outside, one reduction per kernel:
    :func:`mleops.fit.suffstats.sums`): closed-form MLE, Newton verification, covariance."""
    ss = SUFFICIENT[fam.name]
    theta0 = fam.to_unconstrained(ss.mle(s))
    state = newton(lambda th: ss.loglik(fam.to_natural(th), s), theta0, max_iter=max_iter,
                   tol=tol)
    return _finish(fam, state, jnp.asarray(0))


def from_sums(fam: Family, s, v0: float, max_iter: int = 100, tol: float = 1e-12
              ) -> KernelOut:
    """:func:`suff_kernel` on the sums of :func:`mleops.fit.suffstats.sums` (shift ``v0``)."""
    return suff_kernel(fam, stats_from_sums(fam.name, s, v0), max_iter, tol)


@partial(jax.jit, static_argnames=("fam", "method", "max_iter", "tol"))
def multistart_kernel(fam: Family, d: Data, thetas0, method: str = "newton",
                      max_iter: int = 200, tol: float = 1e-12) -> SolverState:
    """Solve from several starts at once (vmapped over the leading axis of ``thetas0``)."""
    d = with_weights(d)
    obj = lambda th: total_loglik(fam, th, d)  # noqa: E731
    return jax.vmap(lambda t: solve(obj, t, d, method, max_iter, tol))(thetas0)


@partial(jax.jit, static_argnames=("fam", "max_iter", "tol"))
def polish_kernel(fam: Family, d: Data, theta, max_iter: int = 5, tol: float = 1e-12) -> KernelOut:
    """A few Newton steps from ``theta`` (e.g. after relabelling a mixture) + covariance."""
    d = with_weights(d)
    obj = lambda th: total_loglik(fam, th, d)  # noqa: E731
    return _finish(fam, newton(obj, theta, max_iter=max_iter, tol=tol), jnp.asarray(0))


@partial(jax.jit, static_argnames=("fam", "method", "max_iter", "tol", "right_only"))
def batch_kernel(fam: Family, d: Data, method: str = "newton", max_iter: int = 100,
                 tol: float = 1e-12, right_only: bool = False) -> KernelOut:
    """``fit_kernel`` vmapped over independent series (leading axis of every data field);
    ``right_only`` as there (every series' only censoring is on the right)."""
    with many_series():
        return jax.vmap(lambda dd: _fit(fam, dd, method, max_iter, tol, right_only))(d)
