"""What a rollout's test promises (:class:`TestConfig`): a module of its own, below both the
evidence kernels and the sequential test that use it, so neither imports the other."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from mleops.errors import DataError

MODES = ("paired", "unpaired")


@dataclass(frozen=True)
class TestConfig:
    """What the rollout promises: error rates, the tolerance, the burn-in and the scale floor."""

    __test__ = False  # not a pytest class

    mode: str = "unpaired"  # "paired" (shadow: same rows) | "unpaired" (split traffic)
    min_drop: float = 0.05  # nats/row: the smallest drop worth catching (the tolerance)
    alpha: float = 0.01  # false-rollback probability on A/A, over the whole rollout
    beta: float = 0.05  # chance of "not_worse" when the canary is worse by >= min_drop
    min_rows: int = 300  # per arm, before any decision (effective rows: correlated count less)
    min_units: int = 30  # requests per arm (sums: ticks) before any decision: a variance needs them
    min_blocks: int = 5  # ticks with both arms, before any decision
    scale_floor: float = 0.1  # per-request sd of a contrast >= this x the log-likelihoods' sd
    absurd_nats: float = 100.0  # a row this far below its block's median is absurd: not tested

    def __post_init__(self) -> None:
        integer = lambda v, lo: isinstance(v, int | np.integer) and not isinstance(v, bool) \
            and v >= lo  # noqa: E731
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (finite(self.min_drop) and self.min_drop > 0, "min_drop must be > 0 (nats/row)"),
            (finite(self.alpha) and 0 < self.alpha < 1, "alpha must be in (0, 1)"),
            (finite(self.beta) and 0 < self.beta < 1, "beta must be in (0, 1)"),
            (integer(self.min_rows, 2), "min_rows must be an integer >= 2"),
            (integer(self.min_blocks, 2), "min_blocks must be an integer >= 2"),
            (integer(self.min_units, 2), "min_units must be an integer >= 2"),
            (finite(self.scale_floor) and self.scale_floor >= 0, "scale_floor must be >= 0"),
            (finite(self.absurd_nats) and self.absurd_nats > 0, "absurd_nats must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(f"bad rollout test config: {message}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TestConfig:
        names = {f.name for f in fields(cls)}
        if unknown := sorted(set(d) - names):
            raise DataError(f"bad rollout test config: unknown keys {unknown}")
        return cls(**d)


def finite(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and math.isfinite(v)


__all__ = ["MODES", "TestConfig", "finite"]
