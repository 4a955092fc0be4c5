"""Constraints as data and the bijections that map unconstrained reals onto them.

Optimisers work on an unconstrained vector ``theta``; families declare one constraint per
coordinate and the mapping is done once, here (numpyro's pattern: one small class per
constraint, each a single module-level instance with ``forward`` / ``inverse`` / ``contains``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Constraint:
    """A constraint on one scalar parameter, with its bijection from the real line."""

    name = "constraint"

    def forward(self, u: jax.Array) -> jax.Array:  # unconstrained -> constrained
        raise NotImplementedError

    def inverse(self, v: jax.Array) -> jax.Array:  # constrained -> unconstrained
        raise NotImplementedError

    def contains(self, v: float) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Real(Constraint):
    name = "real"

    def forward(self, u):
        return u

    def inverse(self, v):
        return v

    def contains(self, v):
        return math.isfinite(float(v))


@dataclass(frozen=True)
class Positive(Constraint):
    """(0, inf) through exp: scales, rates, shapes."""

    name = "positive"

    def forward(self, u):
        return jnp.exp(u)

    def inverse(self, v):
        return jnp.log(v)

    def contains(self, v):
        return 0 < float(v) < math.inf


@dataclass(frozen=True)
class UnitInterval(Constraint):
    """(0, 1) through the logistic sigmoid: probabilities."""

    name = "unit_interval"

    def forward(self, u):
        return jax.nn.sigmoid(u)

    def inverse(self, v):
        return jnp.log(v) - jnp.log1p(-v)

    def contains(self, v):
        return 0 < float(v) < 1


real, positive, unit_interval = Real(), Positive(), UnitInterval()

__all__ = ["Constraint", "Positive", "Real", "UnitInterval", "positive", "real", "unit_interval"]
