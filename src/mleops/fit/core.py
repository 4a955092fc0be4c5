"""Jitted fit kernels shared by single, batched (vmapped) and sharded fits."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ..data import Data
from ..families import Family
from ..likelihood import total_loglik
from .fast import fast_start, has_fast_path
from .lbfgs import lbfgs
from .newton import SolverState, newton


def start_theta(fam: Family, d: Data):
    """Unconstrained start (closed form / profile where available) and its iterations."""
    p0 = fam.init(d.x, d.w, d.X)
    it = jnp.asarray(0)
    if has_fast_path(fam, d):
        p0, it = fast_start(fam, d, p0)
    return fam.to_unconstrained(p0), it


def solve(fam: Family, d: Data, theta0, method: str, max_iter: int, tol: float) -> SolverState:
    obj = lambda th: total_loglik(fam, th, d)  # noqa: E731
    if method == "lbfgs":
        return lbfgs(obj, theta0, max_iter=max_iter, scale=jnp.maximum(jnp.sum(d.w), 1.0) * 1e-2)
    return newton(obj, theta0, max_iter=max_iter, tol=tol)


@partial(jax.jit, static_argnames=("fam", "method", "max_iter", "tol"))
def fit_kernel(fam: Family, d: Data, method: str = "newton", max_iter: int = 100,
               tol: float = 1e-12):
    """Start + solve in one compiled call: returns (state, start iterations)."""
    theta0, it0 = start_theta(fam, d)
    return solve(fam, d, theta0, method, max_iter, tol), it0


@partial(jax.jit, static_argnames=("fam", "method", "max_iter", "tol"))
def multistart_kernel(fam: Family, d: Data, thetas0, method: str = "newton",
                      max_iter: int = 200, tol: float = 1e-12):
    """Solve from several starts at once (vmapped over the leading axis of ``thetas0``)."""
    return jax.vmap(lambda t: solve(fam, d, t, method, max_iter, tol))(thetas0)


@partial(jax.jit, static_argnames=("fam", "method", "max_iter", "tol"))
def batch_kernel(fam: Family, d: Data, method: str = "newton", max_iter: int = 100,
                 tol: float = 1e-12):
    """``fit_kernel`` vmapped over independent series (leading axis of every data field)."""
    return jax.vmap(lambda dd: fit_kernel.__wrapped__(fam, dd, method, max_iter, tol))(d)


def natural_cov_jax(fam: Family, theta, H):
    """Delta-method covariance of natural parameters; NaN where information is singular."""
    J = jax.jacfwd(fam.to_natural)(theta)
    info = -0.5 * (H + H.T)
    L = jnp.linalg.cholesky(info)
    Linv = jax.scipy.linalg.solve_triangular(L, jnp.eye(H.shape[0], dtype=H.dtype), lower=True)
    return J @ (Linv.T @ Linv) @ J.T
