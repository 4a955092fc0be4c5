"""Canary rollouts: a persisted controller, an always-valid sequential test on live
log-likelihood, guardrails, and two backends (local router over real model servers;
Kubernetes SeldonDeployment traffic + Prometheus)."""

from __future__ import annotations

from typing import Any

from .controller import Backend, Controller, Observation, RolloutError, parse_steps
from .guardrails import Guardrails
from .state import (
    FAILED,
    PROGRESSING,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
    WAITING,
    AnnotationStateStore,
    FileStateStore,
    RolloutState,
)
from .statistics import SequentialTest, Summary, TestConfig, Verdict


def backend_from(desc: dict[str, Any], registry=None) -> Backend:
    """The backend a state's ``backend`` description names (what `status`/`abort` reuse)."""
    kind = desc.get("kind")
    if kind == "local":
        from .local import LocalBackend

        return LocalBackend(desc["router"])
    if kind == "kubernetes":
        from .kubernetes import KubernetesBackend

        return KubernetesBackend.from_description(desc, registry=registry)
    raise RolloutError(f"unknown rollout backend {desc!r}")


__all__ = ["AnnotationStateStore", "Backend", "Controller", "FileStateStore", "Guardrails",
           "Observation", "RolloutError", "RolloutState", "SequentialTest", "Summary",
           "TestConfig", "Verdict", "backend_from", "parse_steps", "FAILED", "PROGRESSING",
           "PROMOTED", "PROMOTING", "ROLLED_BACK", "WAITING"]
