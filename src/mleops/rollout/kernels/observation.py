"""What a backend saw in one tick (:class:`Observation`): the input of the decision kernels.

It sits with the kernels, not with the backend interface, so the kernels need nothing above
them; :mod:`mleops.rollout.backends.base` re-exports it for the backends that fill it in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from mleops.rollout.kernels.statistics import Summary


@dataclass
class Observation:
    """What a backend saw since the state's cursor (the cursor is advanced in place)."""

    canary_rows: np.ndarray  # per-row log-likelihoods (paired: aligned with champion_rows)
    champion_rows: np.ndarray
    canary_requests: np.ndarray | None = None  # request id of each row (None: unknown)
    champion_requests: np.ndarray | None = None
    canary_sums: Summary | None = None  # sums-only sources (Prometheus)
    champion_sums: Summary | None = None
    # guardrail inputs per arm ("canary"/"champion"): requests, errors, outside_support_rate,
    # p99_ms (canary counts since the canary was deployed)
    arms: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def canary_count(self) -> int:
        return int(self.canary_rows.size + (self.canary_sums.n if self.canary_sums else 0))


__all__ = ["Observation"]
