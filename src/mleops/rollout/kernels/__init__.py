"""The decision kernels of a rollout: pure numbers in, a decision out.

``config`` (what the test promises) < ``evidence`` (block terms, long-run variances,
e-values) < ``statistics`` (the anytime-valid sequential test) and ``guardrails`` <
``decision`` (one tick's decision, shared by the controller and the judge). They import
nothing of the rollout above them: no backend, no state store, no HTTP.
"""

from mleops.rollout.kernels.config import TestConfig
from mleops.rollout.kernels.decision import Counters, Decision, conclude, decide, settle, weigh
from mleops.rollout.kernels.fleet import FleetConfig, FleetEvidence, e_bh_mask
from mleops.rollout.kernels.guardrails import Guardrails
from mleops.rollout.kernels.observation import Observation
from mleops.rollout.kernels.statistics import SequentialTest, Summary, Verdict

__all__ = ["Counters", "Decision", "FleetConfig", "FleetEvidence", "Guardrails", "Observation",
           "SequentialTest", "Summary", "TestConfig", "Verdict", "conclude", "decide",
           "e_bh_mask", "settle", "weigh"]
