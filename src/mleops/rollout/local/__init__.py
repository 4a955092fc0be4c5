"""The local rollout backend: real model servers behind a router on 127.0.0.1, and replay."""

from mleops.rollout.local.backend import LocalBackend, LocalDataPlane
from mleops.rollout.local.http import RouterServer
from mleops.rollout.local.replay import Replayer, load_rows
from mleops.rollout.local.router import MODES, PREDICT_PATH, ArmStats, Router, Upstream

__all__ = ["ArmStats", "LocalBackend", "LocalDataPlane", "MODES", "PREDICT_PATH", "Replayer",
           "Router", "RouterServer", "Upstream", "load_rows"]
