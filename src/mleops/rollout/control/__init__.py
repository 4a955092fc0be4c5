"""The rollout controller (phases; each tick observes, guards, advances, persists) and the
offline evaluator that replays recorded rows through the same controller."""

from mleops.rollout.control.controller import Controller, parse_steps
from mleops.rollout.control.fleet_controller import FleetRollout, FleetRolloutState
from mleops.rollout.control.fleet_finish import finish_fleet_rollout, rollout_take, worst_keys
from mleops.rollout.control.fleet_offline import evaluate_fleet_stream
from mleops.rollout.control.offline import evaluate_stream

__all__ = ["Controller", "FleetRollout", "FleetRolloutState", "evaluate_fleet_stream", "evaluate_stream", "finish_fleet_rollout",
           "parse_steps", "rollout_take", "worst_keys"]
