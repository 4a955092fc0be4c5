"""``mleops judge``: the rollout decision over HTTP for Argo Rollouts (``web`` metric) and
Flagger (webhooks), with the controller's decision kernels and no traffic of its own."""

from mleops.rollout.judge.core import Analysis, Judge, JudgeFull, JudgeStore, check_key
from mleops.rollout.judge.fleet import FleetJudge
from mleops.rollout.judge.server import JudgeServer

__all__ = ["Analysis", "FleetJudge", "Judge", "JudgeFull", "JudgeServer", "JudgeStore", "check_key"]
