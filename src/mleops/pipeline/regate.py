"""Compare-and-register: a candidate whose champion moved while it ran is re-gated, not refused.

The gate compares the candidate with the champion of the moment; registration happens later,
under the model's lock. If the champion changed in between (another run's first model, a
promotion, a rollout ending), registering the candidate would make it a challenger that was
never compared with the champion it now challenges. Instead of refusing it (a red CI job
for a candidate that may well be good), the register step scores the same held-out rows
under the current champion, runs the gate's decision again with the configuration it was
gated with, and registers or rejects on that, recording both decisions on the run and the
version. The champion can move again while it re-scores (the lock is not held through the
scoring): after ``MAX_ATTEMPTS`` registrations refused for that, :class:`ChampionKeptMoving`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np

from mleops.artifact import ModelArtifact
from mleops.errors import DataError
from mleops.registry.session import RegistryError

MAX_ATTEMPTS = int(os.environ.get("MLEOPS_REGATE_ATTEMPTS", "3"))
DECISIONS_TAG = "mleops.gate_decisions"  # on the version: every gate decision, in order
REGATED_TAG = "mleops.gate_regated"  # on the run: how many times it was re-gated


class ChampionKeptMoving(RegistryError):
    """The champion moved on every one of ``MAX_ATTEMPTS`` tries: not registered."""


def score_champion(held, art: ModelArtifact, version: str, champion: ModelArtifact
                   ) -> tuple[np.ndarray, dict | None]:
    """The champion's per-row log-likelihood on the held-out table ``held``, and how many of
    those rows it trained on (a champion scored on its own training rows is no fair judge)."""
    from mleops.gate.calibration import heldout_loglik
    from mleops.pipeline.overlap import overlap

    if champion.features != art.features:
        raise DataError(f"champion v{version} uses covariates {champion.features}, the "
                        f"candidate {art.features}: not comparable")
    ll = heldout_loglik(champion, **champion.modeled_rows(held.x, event=held.event, X=held.X))
    return ll, overlap(held, champion.metadata.get("train_rows_sketch"))


def note_overlap(decision, ov: dict | None) -> None:
    """Add the champion's train/held-out overlap to ``decision`` (a GateDecision)."""
    if ov is None:
        return
    share = decision.stats["heldout_overlap_champion_train"] = ov.get("share")
    line = f"held-out rows the champion trained on: {ov['note']}"
    if share is not None:
        line = f"held-out rows the champion trained on: {share:.1%} ({ov['note']})"
        if share > 0.01:
            line += ("; its held-out score is partly a training score, so the comparison "
                     "favours the champion")
    decision.reasons.append(line)


def regate(decision: dict, candidate_ll: np.ndarray, calibration: dict, *, held,
           art: ModelArtifact, registry, model_name: str, champion_version: str) -> dict:
    """The gate decision again, against ``champion_version`` ("" for none), on the same
    held-out rows and with the configuration ``decision`` records."""
    from mleops.gate.decision import GateConfig, decide

    if "config" not in decision:
        raise RegistryError("the gate decision records no configuration: cannot re-gate")
    ov, champ_ll = None, None
    if champion_version:
        found = registry.load_version(model_name, champion_version)
        if found is None:
            raise RegistryError(f"model {model_name!r} has no version {champion_version} "
                                f"to re-gate against")
        champ_ll, ov = score_champion(held, art, champion_version, found[1])
    new = decide(candidate_ll, champ_ll, calibration, GateConfig(**decision["config"]))
    note_overlap(new, ov)
    new.reasons.insert(0, f"re-gated: the champion moved from "
                          f"{decision.get('champion_version') or 'none'} to "
                          f"{champion_version or 'none'} while this candidate ran")
    return {**new.to_dict(), "champion_version": champion_version,
            "config": decision["config"]}


def _history(decisions: list[dict]) -> str:
    return json.dumps([{"champion_version": d.get("champion_version", ""),
                        "outcome": d.get("outcome", ""), "passed": bool(d.get("passed"))}
                       for d in decisions])


def register_regated(registry, model_name: str, run_id: str, lineage: dict, decision: dict,
                     again: Callable[[str], dict], *, attempts: int = MAX_ATTEMPTS
                     ) -> tuple[str | None, list[dict]]:
    """Register the run's model, re-gating with ``again(champion)`` each time the champion
    moved. Returns (version or None if a re-gate rejected it, every decision in order).

    ``again`` returns the new decision, or (decision, run id) when passing it means
    registering another run (a fleet, whose merge depends on the champion)."""
    from mleops.gate.decision import outcome_of
    from mleops.registry.registry import ChampionMoved

    decisions, expected = [decision], str(decision.get("champion_version", ""))
    for _ in range(attempts):
        try:
            tags = {**lineage, DECISIONS_TAG: _history(decisions),
                    "mleops.gate": outcome_of(decisions[-1]),
                    "mleops.champion_version_compared": expected}
            return registry.register(model_name, run_id, tags=tags,
                                     expected_champion=expected), decisions
        except ChampionMoved as moved:
            new = again(moved.now)
            if isinstance(new, tuple):  # a fleet's: its new merge is a new run to register
                new, run_id = new
            decisions.append(new)
            registry.log_dict(run_id, new, f"gate/regate-{len(decisions) - 1}.json")
            registry.mark_run(run_id, {REGATED_TAG: str(len(decisions) - 1),
                                       "mleops.gate": outcome_of(new),
                                       "mleops.champion_version_compared": moved.now})
            if not new["passed"]:
                registry.mark_run(run_id, {"mleops.registered": "false"})
                return None, decisions
            expected = moved.now
    raise ChampionKeptMoving(
        f"the champion of {model_name!r} moved {attempts} times while this candidate was "
        f"being registered (gated against {', '.join(d['champion_version'] or 'none' for d in decisions)}): "
        f"not registered; re-run the pipeline")
