"""What a rollout drives: the backend interface (Flagger's pattern: a small interface, one file
per implementation; :mod:`mleops.rollout.backends.factory` picks one).

The factory is a module of its own because the implementations import this interface: were
it here, base.py and the backends would import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from mleops.errors import RolloutError
from mleops.rollout.kernels.observation import Observation

if TYPE_CHECKING:  # typing only
    from mleops.rollout.state.store import RolloutState

MODES = ("split", "shadow")


class Backend(Protocol):
    """Moves traffic and reports what the model servers saw (local router or Kubernetes)."""

    def describe(self) -> dict[str, Any]: ...
    def deploy_canary(self, state: RolloutState) -> None: ...
    def set_weight(self, state: RolloutState) -> None: ...
    def read(self, state: RolloutState) -> Observation: ...
    def promote(self, state: RolloutState) -> None: ...
    def rollback(self, state: RolloutState) -> None: ...


__all__ = ["MODES", "Backend", "Observation", "RolloutError"]
