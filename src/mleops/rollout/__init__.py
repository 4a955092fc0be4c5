"""Canary rollouts: a persisted controller, an always-valid sequential test on live
log-likelihood, guardrails, and three backends (a local router over real model servers;
Kubernetes SeldonDeployment traffic and KServe InferenceService canaries with Prometheus).

The room, bottom to top (each subpackage imports only those below it; checked by
tests/test_boundaries.py): ``kernels`` (the test, its evidence, guardrails, one tick's
decision), ``state`` (the persisted record and its lease), ``backends`` (the interface, the
implementations, the factory), then ``control`` (the controller, offline replay) and
``judge`` (the decision over HTTP), which do not import each other.
"""

from __future__ import annotations

from mleops.rollout.backends import (
    MODES,
    AnnotationStateStore,
    Backend,
    RolloutError,
    backend_from,
    open_backend,
    state_store,
)
from mleops.rollout.control import (
    Controller,
    FleetRollout,
    evaluate_fleet_stream,
    evaluate_stream,
    finish_fleet_rollout,
    parse_steps,
)
from mleops.rollout.kernels import (
    Guardrails,
    Observation,
    SequentialTest,
    Summary,
    TestConfig,
    Verdict,
)
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

__all__ = ["AnnotationStateStore", "Backend", "Controller", "FileStateStore", "FleetRollout", "Guardrails",
           "MODES", "Observation", "RolloutError", "RolloutState", "SequentialTest", "Summary",
           "TestConfig", "Verdict", "backend_from", "evaluate_fleet_stream", "evaluate_stream",
           "finish_fleet_rollout", "open_backend", "parse_steps",
           "state_store", "FAILED", "PROGRESSING", "PROMOTED", "PROMOTING", "ROLLED_BACK",
           "WAITING"]
