"""Compare-and-register for fleets: the champion moved while a fleet candidate ran.

A fleet's registered version is a merge built against the champion it was gated against, so
re-gating it is more than a new decision: the per-key gate runs again on the same held-out
rows against the new champion (same configuration, same FDR), and when it passes the merge
is rebuilt against that champion and logged as a new run, the one then registered. The first
run is marked ``superseded`` and names its successor; the new run carries the original
decision and every re-gate, so what was decided, against whom and why stays auditable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np

from mleops.errors import DataError
from mleops.fleet_artifact import FleetArtifact, key_labels
from mleops.pipeline.fleet_steps import _scores, fleet_version, gate_fleet, merge_against
from mleops.registry import RegistryError


def regate_fleet(decision: dict, candidate_ll: np.ndarray, info: dict, *, held,
                 art: FleetArtifact, registry, model_name: str, champion_version: str) -> dict:
    """The fleet gate's decision again, against ``champion_version`` ("" for none)."""
    from mleops.gate import GateConfig

    if "config" not in decision or "fdr" not in decision.get("stats", {}):
        raise RegistryError("the fleet gate decision records no configuration: cannot "
                            "re-gate")
    at = art.positions(list(held.keys))
    keep = at >= 0
    if int(keep.sum()) != candidate_ll.size:
        raise RegistryError("the held-out rows are not the ones the candidate was scored on")
    keys = [k[keep] for k in held.keys]
    champ = None
    if champion_version:
        champion = fleet_version(registry, model_name, champion_version)
        if champion.key_names != art.key_names or champion.family != art.family:
            raise DataError(f"champion v{champion_version} is not a {art.family['name']} fleet "
                            f"by {art.key_names}: not comparable")
        cat = champion.positions(keys)
        champ, has = np.full(candidate_ll.size, np.nan), cat >= 0
        champ[has] = _scores(champion, held.take(np.flatnonzero(keep)), cat, has)
    with tempfile.TemporaryDirectory(prefix="mleops-regate-") as tmp:
        new = gate_fleet(candidate_ll, champ, key_labels(keys), {**info, "champion_version":
                                                     champion_version}, tmp,
                         os.path.join(tmp, "report.html"),
                         config=GateConfig(**decision["config"]),
                         fdr=float(decision["stats"]["fdr"]), decision_file="decision.json")
    new["reasons"].insert(0, f"re-gated: the champion moved from "
                             f"{decision.get('champion_version') or 'none'} to "
                             f"{champion_version or 'none'} while this fleet ran")
    return new


def again_for_fleet(decision: dict, cand: np.ndarray, info: dict, *, heldout_path: str, art,
                    registry, model_name: str, run: dict, lineage: dict,
                    current: list[str]) -> Callable[[str], dict | tuple[dict, str]]:
    """The ``again`` of :func:`~mleops.pipeline.regate.register_regated` for a fleet: re-gate
    against the champion it names; if that passes, log the merge against it as a new run
    (``run``: its params, metrics, report_dir, tags), mark the run it supersedes, update
    ``lineage`` (the version's tags) and ``current`` (the run to register) in place."""
    from mleops.pipeline.dataset import read_dataset

    regates: list[dict] = []

    def again(champion: str):
        new = regate_fleet(decision, cand, info, held=read_dataset(heldout_path), art=art,
                           registry=registry, model_name=model_name,
                           champion_version=champion)
        regates.append(new)
        if not new["passed"]:
            return new
        merged = merge_against(art, new, registry, model_name)
        lineage.update({**merged.digests(), "mleops.fleet.parent_champion": champion})
        rid = registry.log_fleet_run(
            experiment=model_name, params=run["params"], metrics=run["metrics"], fleet=merged,
            report_dir=run["report_dir"], registered=True,
            tags={**run["tags"], **lineage, "mleops.regated_from_run": current[0]})
        registry.log_dict(rid, decision, "gate/decision.json")
        for i, d in enumerate(regates[:-1], 1):  # the re-gates before this one
            registry.log_dict(rid, d, f"gate/regate-{i}.json")
        registry.mark_run(current[0], {"mleops.registered": "superseded",
                                       "mleops.superseded_by": rid})
        current[0] = rid
        return new, rid
    return again


__all__ = ["again_for_fleet", "regate_fleet"]
