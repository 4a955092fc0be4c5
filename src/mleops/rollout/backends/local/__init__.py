"""The local rollout backend: real model servers behind a router on 127.0.0.1, and replay."""

from mleops.rollout.backends.local.backend import LocalBackend, LocalDataPlane
from mleops.rollout.backends.local.http import RouterServer
from mleops.rollout.backends.local.replay import Replayer, load_rows
from mleops.rollout.backends.local.router import MODES, PREDICT_PATH, ArmStats, Router, Upstream

__all__ = ["ArmStats", "LocalBackend", "LocalDataPlane", "MODES", "PREDICT_PATH", "Replayer",
           "Router", "RouterServer", "Upstream", "load_rows"]
