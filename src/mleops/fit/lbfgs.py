"""optax L-BFGS for larger parameter counts (many covariates), where a Hessian per step is
too costly. The final Hessian is still computed once, for standard errors."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mleops.fit.newton import SolverState


def lbfgs(objective: Callable[[jax.Array], jax.Array], theta0: jax.Array, *,
          max_iter: int = 500, gtol: float = 1e-7, scale: jax.Array = 1.0) -> SolverState:
    """Maximise ``objective``; converged when ``max|grad| <= gtol * scale``."""
    import optax  # lazily: model servers import mleops without the training stack

    neg = lambda th: -objective(th)  # noqa: E731
    opt = optax.lbfgs()
    vg = optax.value_and_grad_from_state(neg)

    def step(carry):
        th, st, it = carry
        v, g = vg(th, state=st)
        upd, st = opt.update(g, st, th, value=v, grad=g, value_fn=neg)
        return optax.apply_updates(th, upd), st, it + 1

    def cond(carry):
        th, st, it = carry
        g = optax.tree.get(st, "grad")
        small = jnp.max(jnp.abs(g)) <= gtol * scale
        return (it < max_iter) & ((it == 0) | ~small)

    th, _, it = jax.lax.while_loop(cond, step, (theta0, opt.init(theta0), jnp.asarray(0)))
    f, g = jax.value_and_grad(objective)(th)
    H = jax.hessian(objective)(th)
    conv = jnp.isfinite(f) & (jnp.max(jnp.abs(g)) <= gtol * scale)
    return SolverState(th, f, g, H, it, jnp.asarray(True), conv)
