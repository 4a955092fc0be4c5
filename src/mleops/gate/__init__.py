"""Judging a candidate: held-out scoring, calibration, the gate decision and its report."""

from mleops.gate.calibration import (
    CALIBRATION_KEYS,
    COVERAGE_LEVELS,
    calibration,
    heldout_loglik,
    summary_metrics,
)
from mleops.gate.decision import (
    DEFAULT_TOLERANCE,
    INCONCLUSIVE_POLICIES,
    GateConfig,
    GateDecision,
    decide,
    outcome_of,
)
from mleops.gate.report import write_report

__all__ = ["CALIBRATION_KEYS", "COVERAGE_LEVELS", "DEFAULT_TOLERANCE", "GateConfig",
           "INCONCLUSIVE_POLICIES",
           "GateDecision", "calibration", "decide", "heldout_loglik", "summary_metrics",
           "outcome_of", "write_report"]
