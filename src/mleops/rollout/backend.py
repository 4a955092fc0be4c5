"""What a rollout drives: the backend interface, and the one factory that builds a backend
for a new rollout or from a persisted state's description (Flagger's router/metrics split:
small interfaces, one file per implementation, a factory)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
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


def backend_from(desc: dict[str, Any], registry=None) -> Backend:
    """The backend a state's ``backend`` description names (what resume/status/abort reuse)."""
    kind = desc.get("kind")
    if kind == "local":
        from mleops.rollout.local import LocalBackend

        return LocalBackend(desc["router"])
    if kind == "kubernetes":
        from mleops.rollout.kubernetes import KubernetesBackend

        return KubernetesBackend.from_description(desc, registry=registry)
    raise RolloutError(f"unknown rollout backend {desc!r}")


def state_store(*, kubernetes: bool = False, namespace: str = "models", state_dir: str = ""):
    """Where rollout states live: an annotation on the SeldonDeployment, or local files."""
    if kubernetes:
        from mleops.rollout.kubernetes import AnnotationStateStore

        return AnnotationStateStore(namespace)
    from mleops.rollout.state import FileStateStore

    return FileStateStore(state_dir)


@contextlib.contextmanager
def open_backend(name: str, *, registry, kubernetes: bool = False, router_url: str = "",
                 namespace: str = "models", prometheus: str = "",
                 artifacts_destination: str = "", env_secret: str = "") -> Iterator[Backend]:
    """The backend for a new rollout of model ``name``.

    Kubernetes: the model's SeldonDeployment, metrics from ``prometheus``. Locally: the
    router at ``router_url``, or, without one, a data plane started here (champion server
    behind a router on 127.0.0.1) that lives as long as the ``with`` block.
    """
    if kubernetes:
        from mleops.rollout.kubernetes import KubernetesBackend

        yield KubernetesBackend(
            name, namespace, prometheus, registry=registry,
            artifacts_destination=artifacts_destination,
            render_options={"env_secret_ref_name": env_secret} if env_secret else None)
        return
    from mleops.rollout.local import LocalBackend, LocalDataPlane

    if router_url:
        yield LocalBackend(router_url)
        return
    with LocalDataPlane(name, tracking_uri=registry.uri) as plane:
        yield LocalBackend(plane.url)


__all__ = ["MODES", "Backend", "Observation", "RolloutError", "backend_from", "open_backend",
           "state_store"]
