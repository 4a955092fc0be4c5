"""Judging a candidate: held-out scoring, calibration, the gate decision and its report.

Imported eagerly (unlike :mod:`mleops.pipeline`): ``calibration`` is both a submodule and a
function here, and only an eager import keeps the package attribute the function. Pipeline
tasks that need none of it do not import this package.
"""

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
from mleops.gate.fleet import FleetDecision, FleetGateConfig, decide_fleet
from mleops.gate.report import write_report
from mleops.multiplicity import bh, e_bh

__all__ = ["CALIBRATION_KEYS", "COVERAGE_LEVELS", "DEFAULT_TOLERANCE", "GateConfig",
           "INCONCLUSIVE_POLICIES",
           "GateDecision", "calibration", "decide", "heldout_loglik", "summary_metrics",
           "outcome_of", "write_report",
           "FleetDecision", "FleetGateConfig", "bh", "decide_fleet", "e_bh"]
