"""Safeguarded Newton ascent for small parameter counts (the default solver).

The Hessian is modified to its absolute eigenvalues (so a step is always an ascent direction,
even away from the optimum), and a backtracking Armijo line search rejects steps that leave
the support (non-finite log-likelihood). Converged means the Newton decrement - the predicted
gain of one more step - is below ``tol * (1 + |loglik|)`` *and* the gradient is small
(``GRAD_RTOL * (1 + |loglik|)``): a huge curvature makes the decrement tiny anywhere, so the
decrement alone once called a Student t on constant data converged with gradient norm 50. Everything is a ``lax.while_loop``,
so the solver jits, vmaps (``fit_many``, multi-start) and runs on sharded data unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

GRAD_RTOL = 1e-6  # largest |gradient| component at convergence, relative to 1 + |loglik|


class SolverState(NamedTuple):
    theta: jax.Array
    f: jax.Array
    g: jax.Array
    H: jax.Array
    it: jax.Array
    done: jax.Array
    converged: jax.Array


def eig_sym(M):
    """Eigenvalues and vectors of a symmetric matrix. 2x2 (most families) by one Jacobi
    rotation: elementwise, so it vectorises over a batch of fits, and it keeps LAPACK out
    of the compiled kernel (whose CPU lowering imports scipy.linalg: 0.2 s per process)."""
    if M.shape[-2:] != (2, 2):
        return jnp.linalg.eigh(M)
    a, b, d = M[0, 0], M[0, 1], M[1, 1]
    theta = 0.5 * jnp.arctan2(2.0 * b, a - d)
    c, s = jnp.cos(theta), jnp.sin(theta)
    mid, rad = 0.5 * (a + d), jnp.hypot(0.5 * (a - d), b)
    return jnp.stack([mid + rad, mid - rad]), jnp.array([[c, -s], [s, c]])


def ascent_direction(g, H):
    """(direction, Newton decrement) from |eigenvalues| of -H: always uphill."""
    negH = -0.5 * (H + H.T)
    e, V = eig_sym(negH)
    floor = 1e-12 * jnp.maximum(jnp.max(jnp.abs(e)), 1e-300)
    e = jnp.maximum(jnp.abs(e), floor)
    d = V @ ((V.T @ g) / e)
    return d, jnp.dot(g, d)


def value_grad_hessian(objective: Callable[[jax.Array], jax.Array]):
    """(f, g, H) from one forward-over-reverse pass: the value and gradient come for free
    with the Hessian, and the objective is traced once instead of twice."""

    def gfun(t):
        f, g = jax.value_and_grad(objective)(t)
        return g, (f, g)

    def derivs(theta):
        H, (f, g) = jax.jacfwd(gfun, has_aux=True)(theta)
        return f, g, H

    return derivs


def newton(objective: Callable[[jax.Array], jax.Array], theta0: jax.Array, *,
           max_iter: int = 100, tol: float = 1e-12, derivs=None,
           polish: bool = True) -> SolverState:
    """Maximise ``objective`` from ``theta0``; returns the final state (with its Hessian).

    ``derivs(theta) -> (f, g, H)`` may supply analytic derivatives; default: AD.
    ``polish=False``: the start is exact to round-off (the Weibull profile's last Newton
    step), so the final step of :func:`_polished` would not move it.
    """
    derivs = derivs or value_grad_hessian(objective)
    f0, g0, H0 = derivs(theta0)

    def converged_at(f, g, dec):
        flat = jnp.max(jnp.abs(g)) <= GRAD_RTOL * (1.0 + jnp.abs(f))
        return (0.5 * dec <= tol * (1.0 + jnp.abs(f))) & flat, flat

    # Converged at the start (an exact start: sufficient statistics, the Weibull profile) ends
    # before the loop, as its first pass would: under vmap a loop pass costs every series a
    # line-search trial and a Hessian, converged or not.
    at_start = converged_at(f0, g0, ascent_direction(g0, H0)[1])[0] & jnp.isfinite(f0)
    state = SolverState(theta0, f0, g0, H0, jnp.asarray(0), ~jnp.isfinite(f0) | at_start,
                        at_start)

    def cond(s):
        return (~s.done) & (s.it < max_iter)

    def body(s):
        d, dec = ascent_direction(s.g, s.H)
        small, flat = converged_at(s.f, s.g, dec)

        def try_step(k):
            t = 0.5 ** k
            f_new = objective(s.theta + t * d)
            return jnp.isfinite(f_new) & (f_new >= s.f + 1e-4 * t * dec)

        def search(_):
            # ``~small`` again inside: under vmap the cond runs both branches, and converged
            # series must not spin through 60 round-off-limited trial steps.
            return jax.lax.while_loop(lambda k: (k < 60) & ~small & ~try_step(k),
                                      lambda k: k + 1, 0)

        k = jax.lax.cond(small, lambda _: 0, search, None)
        ok = (k < 60) & ~small
        theta = jnp.where(ok, s.theta + 0.5 ** k * d, s.theta)
        f, g, H = jax.lax.cond(ok, derivs, lambda t: (s.f, s.g, s.H), theta)
        # A failed line search at a point where the decrement is tiny is round-off, not failure.
        stuck = (k >= 60) & ~small
        converged = small | (stuck & flat & (0.5 * dec <= 1e-8 * (1.0 + jnp.abs(s.f))))
        return SolverState(theta, f, g, H, s.it + ok.astype(s.it.dtype), small | stuck,
                           converged)

    state = jax.lax.while_loop(cond, body, state)
    return _polished(derivs, state) if polish else state


def _polished(derivs, s: SolverState) -> SolverState:
    """One more full Newton step from a converged state, kept if no worse. The criterion
    allows an error of order sqrt(tol) relative in the parameters; from there one step is
    exact to round-off, so fits that start elsewhere (a streamed fit, another device count)
    end at the same point to ~1e-12, not merely within the tolerance of each other."""
    d, _ = ascent_direction(s.g, s.H)
    theta = s.theta + d
    f, g, H = derivs(theta)
    keep = s.converged & jnp.isfinite(f) & (f >= s.f) & jnp.all(jnp.isfinite(theta))
    pick = lambda new, old: jnp.where(keep, new, old)  # noqa: E731
    return s._replace(theta=pick(theta, s.theta), f=pick(f, s.f), g=pick(g, s.g),
                      H=pick(H, s.H))
