"""The end of a fleet rollout: one merged registry version, the champion alias moved once.

A fleet rollout decides per key (:class:`~mleops.rollout.kernels.fleet.FleetEvidence`):
promoted keys take the candidate's parameters, rolled-back keys keep the champion's, and keys
still undecided when the rollout ends stay on the champion (no promotion without evidence).
Keys only the candidate has were gated when it was registered and had nothing live to be
compared with: they enter with it. Keys only the champion has stay. The result is one new
version whose ``source_version`` column names, per key, the version its parameters were
registered in, with both parents in its tags.

Registration is idempotent by the rollout's id (the version's ``mleops.candidate_key``): a
controller killed after registering and resumed finds that version instead of adding a
second, and the promotion (:meth:`Registry.promote`, under the model lock, completing a
half-done move) is safe to repeat. If the champion moved since the rollout began (someone
promoted another version), nothing is registered: the merge was computed against a champion
that no longer serves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mleops.errors import DataError, RolloutError
from mleops.fleet_artifact import FleetArtifact, key_labels
from mleops.fleet_merge import merge_fleets
from mleops.rollout.kernels.fleet import NAMES, PROMOTE, FleetEvidence

ROLLOUT_KEY_PREFIX = "fleet-rollout:"


def rollout_take(candidate: FleetArtifact, champion: FleetArtifact,
                 evidence: FleetEvidence) -> dict[str, str]:
    """Key label -> "candidate" | "champion": what the merged version holds for each key
    the candidate has (evidence index = the key's row in the candidate's table)."""
    if evidence.k != len(candidate):
        raise DataError(f"the rollout's evidence covers {evidence.k} keys, the candidate "
                        f"has {len(candidate)}: not this candidate's rollout")
    labels = key_labels(candidate.keys).tolist()
    in_champion = champion.positions(list(candidate.keys)) >= 0
    promoted = evidence.a["decision"] == PROMOTE
    return {k: "candidate" if (promoted[i] or not in_champion[i]) else "champion"
            for i, k in enumerate(labels)}


def finish_fleet_rollout(registry, name: str, *, rollout_id: str, champion_version: str,
                         candidate_version: str, evidence: FleetEvidence) -> dict[str, Any]:
    """Register the merged version (once per rollout) and make it the champion; returns
    ``{"version", "counts", "keys_from"}`` (keys taken from each parent)."""
    from mleops.registry import CANDIDATE_TAG, ChampionMoved, DuplicateVersion

    key = f"{ROLLOUT_KEY_PREFIX}{rollout_id}"
    counts = evidence.counts()
    version = registry.duplicate_of(name, key)
    keys_from: dict[str, int] = {}
    if version is None:
        champion = _fleet(registry, name, champion_version)
        candidate = _fleet(registry, name, candidate_version)
        take = rollout_take(candidate, champion, evidence)
        merged = merge_fleets(candidate, champion, take, champion_version=champion_version,
                              candidate_version=candidate_version)
        keys_from = {v: int((merged.source_version == v).sum())
                     for v in (champion_version, candidate_version)}
        tags = {CANDIDATE_TAG: key, "mleops.rollout_id": rollout_id,
                "mleops.parent_champion": champion_version,
                "mleops.parent_candidate": candidate_version,
                **{f"mleops.keys_{k}": str(v) for k, v in counts.items()},
                **merged.digests()}
        run = registry.log_fleet_run(
            experiment=name, params={"rollout_id": rollout_id, "champion": champion_version,
                                     "candidate": candidate_version},
            metrics={f"keys_{k}": float(v) for k, v in counts.items()}, fleet=merged,
            tags=tags, registered=True)
        try:
            version = registry.register(name, run, tags=tags,
                                        expected_champion=champion_version)
        except DuplicateVersion as e:  # a concurrent finish of the same rollout won
            version = e.version
        except ChampionMoved as e:
            raise RolloutError(f"fleet rollout {rollout_id} of {name!r}: {e}; the merged "
                               "version was not registered") from e
    registry.promote(name, version)
    return {"version": str(version), "counts": counts, "keys_from": keys_from}


def _fleet(registry, name: str, version: str) -> FleetArtifact:
    found = registry.load_fleet(name, version)
    if found is None:
        raise DataError(f"model {name!r} has no fleet version {version}")
    return found[1]


def worst_keys(labels: list[str], evidence: FleetEvidence, n: int | None = 10
               ) -> list[dict[str, Any]]:
    """The keys (``labels``: by evidence index) with the most evidence of a drop first
    (what `rollout fleet status` shows); ``n`` None: every key."""
    a = evidence.a
    drop = evidence.stopped_log_drop()
    order = np.argsort(-drop, kind="stable")[:n]
    return [{"key": str(labels[i]), "decision": NAMES[int(a["decision"][i])],
             "tick": int(a["tick"][i]) if a["tick"][i] >= 0 else None,
             "log_e_drop": float(drop[i]), "rows_canary": int(a["n_c"][i]),
             "rows_champion": int(a["n_p"][i])} for i in order]


__all__ = ["ROLLOUT_KEY_PREFIX", "finish_fleet_rollout", "rollout_take", "worst_keys"]
