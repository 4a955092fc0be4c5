"""Minibatch fits for data too large for one compiled pass: optax Adam on fixed-size chunks,
then Newton polish from gradient and Hessian accumulated chunk by chunk.

Adam alone stops near, not at, the MLE; the accumulated Newton steps make the answer the
same as a full-batch fit and give the observed information for standard errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mleops.families import Family
from mleops.fit.api import _result, resolve_family
from mleops.fit.core import KernelOut, natural_cov_jax
from mleops.fit.data import Data, make_data, with_weights
from mleops.fit.likelihood import total_loglik
from mleops.fit.newton import SolverState, ascent_direction
from mleops.fit.sharded import pad_rows


def _chunks(d: Data, size: int):
    """Fixed-shape chunks (last one padded with weight-0 rows): one compilation for all."""
    n = d.n
    for start in range(0, n, size):
        stop = min(start + size, n)

        def cut(a, zero=False, start=start, stop=stop):
            return None if a is None else pad_rows(a[start:stop], size, zero=zero)

        yield Data(cut(d.x), cut(d.w, True), cut(d.X), cut(d.kind), cut(d.upper),
                   cut(d.trunc_lo), cut(d.trunc_hi))


def fit_minibatch(x, family: str | dict | Family, *, batch_size: int = 65536, epochs: int = 3,
                  learning_rate: float = 0.05, polish_steps: int = 20, tol: float = 1e-12,
                  seed: int = 0, **kwargs):
    """Adam over shuffled chunks for ``epochs``, then full-data Newton polish to convergence.

    ``kwargs`` are the data options of :func:`fit` (weights, event, X, features, ...).
    """
    import optax  # lazily: model servers import mleops without the training stack

    fam_opts = {k: kwargs.pop(k) for k in ("threshold", "k", "features") if k in kwargs}
    fam = resolve_family(family, **fam_opts)
    d = with_weights(make_data(fam, x, **kwargs))
    n = d.n
    rng = np.random.default_rng(seed)
    theta = fam.to_unconstrained(fam.init(d.x, d.w, d.X))
    opt = optax.adam(learning_rate)
    opt_state = opt.init(theta)
    W = float(jnp.sum(d.w))

    @jax.jit
    def adam_step(theta, opt_state, chunk):
        # Mean loss per unit weight keeps the step size independent of n.
        g = jax.grad(lambda t: -total_loglik(fam, t, chunk) / jnp.maximum(jnp.sum(chunk.w), 1.0))(theta)
        upd, opt_state = opt.update(g, opt_state, theta)
        return optax.apply_updates(theta, upd), opt_state

    @jax.jit
    def chunk_derivs(theta, chunk):
        obj = lambda t: total_loglik(fam, t, chunk)  # noqa: E731
        f, g = jax.value_and_grad(obj)(theta)
        return f, g, jax.hessian(obj)(theta)

    steps = 0
    for _ in range(epochs):
        perm = jnp.asarray(rng.permutation(n))
        shuffled = jax.tree.map(lambda a, perm=perm: a[perm], d)
        for chunk in _chunks(shuffled, batch_size):
            theta, opt_state = adam_step(theta, opt_state, chunk)
            steps += 1

    def full(theta):
        tot = [jnp.zeros(()), jnp.zeros_like(theta), jnp.zeros((theta.size, theta.size))]
        for chunk in _chunks(d, batch_size):
            f, g, H = chunk_derivs(theta, chunk)
            tot = [tot[0] + f, tot[1] + g, tot[2] + H]
        return tot

    f, g, H = full(theta)
    converged, it = False, 0
    for it in range(1, polish_steps + 1):  # noqa: B007 (used after the loop)
        step, dec = ascent_direction(g, H)
        if 0.5 * float(dec) <= tol * (1 + abs(float(f))):
            converged = True
            break
        t = 1.0
        for _ in range(30):
            f_new, g_new, H_new = full(theta + t * step)
            if np.isfinite(float(f_new)) and float(f_new) >= float(f) + 1e-4 * t * float(dec):
                break
            t *= 0.5
        else:
            break
        theta, f, g, H = theta + t * step, f_new, g_new, H_new
    state = SolverState(theta, f, g, H, jnp.asarray(it), jnp.asarray(True), jnp.asarray(converged))
    out = KernelOut(state, jnp.asarray(steps), fam.to_natural(theta),
                    natural_cov_jax(fam, theta, H))
    return _result(fam, d, out, "adam+newton", n,
                   {"adam_steps": steps, "batch_size": batch_size, "total_weight": W})
