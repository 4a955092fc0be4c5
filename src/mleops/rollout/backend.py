"""What a rollout drives: the backend interface (Flagger's pattern: a small interface, one file
per implementation; :mod:`mleops.rollout.factory` picks one).

The factory is a module of its own because the implementations import this interface: were
it here, backend.py and the backends would import each other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mleops.errors import MleopsError
from mleops.rollout.statistics import Summary

if TYPE_CHECKING:  # typing only
    from mleops.rollout.state import RolloutState

MODES = ("split", "shadow")


class RolloutError(MleopsError, RuntimeError):
    """A rollout could not start or a backend refused a step; the message says which."""


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


class Backend(Protocol):
    """Moves traffic and reports what the model servers saw (local router or Kubernetes)."""

    def describe(self) -> dict[str, Any]: ...
    def deploy_canary(self, state: RolloutState) -> None: ...
    def set_weight(self, state: RolloutState) -> None: ...
    def read(self, state: RolloutState) -> Observation: ...
    def promote(self, state: RolloutState) -> None: ...
    def rollback(self, state: RolloutState) -> None: ...


__all__ = ["MODES", "Backend", "Observation", "RolloutError"]
