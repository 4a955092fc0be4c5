"""Constraints as data and the bijections that map unconstrained reals onto them.

Optimisers work on an unconstrained vector ``theta``; families declare one constraint per
coordinate and the mapping is done once, here (numpyro's pattern: constraint -> transform).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Constraint:
    """A constraint on one scalar parameter, with its bijection from the real line."""

    name: str

    def forward(self, u: jax.Array) -> jax.Array:  # unconstrained -> constrained
        if self.name == "real":
            return u
        if self.name == "positive":
            return jnp.exp(u)
        if self.name == "unit_interval":
            return jax.nn.sigmoid(u)
        raise ValueError(f"unknown constraint {self.name!r}")

    def inverse(self, v: jax.Array) -> jax.Array:  # constrained -> unconstrained
        if self.name == "real":
            return v
        if self.name == "positive":
            return jnp.log(v)
        if self.name == "unit_interval":
            return jnp.log(v) - jnp.log1p(-v)
        raise ValueError(f"unknown constraint {self.name!r}")

    def contains(self, v: float) -> bool:
        if self.name == "real":
            return bool(jnp.isfinite(v))
        if self.name == "positive":
            return bool(v > 0 and jnp.isfinite(v))
        return bool(0 < v < 1)


real = Constraint("real")
positive = Constraint("positive")
unit_interval = Constraint("unit_interval")
