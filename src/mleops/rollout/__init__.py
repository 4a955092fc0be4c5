"""Canary rollouts: a persisted controller, an always-valid sequential test on live
log-likelihood, guardrails, and two backends (local router over real model servers;
Kubernetes SeldonDeployment traffic + Prometheus)."""

from __future__ import annotations

from mleops.rollout.backend import MODES, Backend, Observation, RolloutError
from mleops.rollout.controller import Controller, parse_steps
from mleops.rollout.factory import backend_from, open_backend, state_store
from mleops.rollout.guardrails import Guardrails
from mleops.rollout.kubernetes import AnnotationStateStore
from mleops.rollout.offline import evaluate_stream
from mleops.rollout.state import (
    FAILED,
    PROGRESSING,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
    WAITING,
    FileStateStore,
    RolloutState,
)
from mleops.rollout.statistics import SequentialTest, Summary, TestConfig, Verdict

__all__ = ["AnnotationStateStore", "Backend", "Controller", "FileStateStore", "Guardrails",
           "MODES", "Observation", "RolloutError", "RolloutState", "SequentialTest", "Summary",
           "TestConfig", "Verdict", "backend_from", "evaluate_stream", "open_backend", "parse_steps",
           "state_store", "FAILED", "PROGRESSING", "PROMOTED", "PROMOTING", "ROLLED_BACK",
           "WAITING"]
