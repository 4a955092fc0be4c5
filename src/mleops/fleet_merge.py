"""A fleet version that is a merge: per key, the candidate's fit or the champion's.

The fleet gate (:func:`mleops.gate.decide_fleet`) says, key by key, which parameters the
next version should hold (``take``: candidate, champion, or excluded for a new key whose
calibration failed). This builds that version's table. Lineage is per key, in
``source_version``: the registry version a key's parameters were first registered in, ""
for parameters fitted in this version itself (its number is not known until it is
registered). Keys the gate did not see keep what they had: a champion key without held-out
rows stays the champion's, a candidate key the champion lacks and the gate did not score
enters only if it was fitted (a merged fleet never silently loses a key).
"""

from __future__ import annotations

import numpy as np

from mleops.errors import DataError
from mleops.fleet_artifact import FleetArtifact, key_labels


def merge_fleets(candidate: FleetArtifact, champion: FleetArtifact | None, take: dict,
                 *, champion_version: str, candidate_version: str = "") -> FleetArtifact:
    """The merged table. ``take``: key label -> "candidate" | "champion" | "excluded" (the
    fleet gate's ``table["take"]``, or a fleet rollout's decisions); ``champion_version``:
    the champion's registry version; ``candidate_version``: the candidate's, when it is a
    registered version already (a rollout's), so its keys' lineage names it."""
    if champion is not None:
        if champion.family != candidate.family or champion.key_names != candidate.key_names:
            raise DataError(f"cannot merge fleets of different families or keys: "
                            f"{champion.family.get('name')} by {champion.key_names} and "
                            f"{candidate.family.get('name')} by {candidate.key_names}")
    if bad := sorted({str(v) for v in take.values()} - {"candidate", "champion", "excluded"}):
        raise DataError(f"take must say candidate, champion or excluded, not {bad}")
    cand_at = {k: i for i, k in enumerate(key_labels(candidate.keys).tolist())}
    champ_at = {} if champion is None else {
        k: i for i, k in enumerate(key_labels(champion.keys).tolist())}
    rows: list[tuple[FleetArtifact, int, str]] = []  # (source table, row, source_version)
    for key in sorted(set(cand_at) | set(champ_at)):
        choice = take.get(key)
        if choice is None:  # not gated: keep the champion's, else a fitted candidate's
            choice = "champion" if key in champ_at else (
                "candidate" if candidate.servable[cand_at[key]] else "excluded")
        if choice == "champion" and key not in champ_at:
            raise DataError(f"take says key {key!r} keeps the champion, which lacks it")
        if choice == "candidate" and key not in cand_at:
            raise DataError(f"take says key {key!r} takes the candidate, which lacks it")
        if choice == "candidate":
            i = cand_at[key]
            rows.append((candidate, i, str(candidate.source_version[i]) or candidate_version))
        elif choice == "champion":
            i = champ_at[key]
            rows.append((champion, i, str(champion.source_version[i]) or champion_version))
    if not rows:
        raise DataError("the merge keeps no key: nothing to register")

    def col(get):
        return [get(src, i) for src, i, _ in rows]

    keys = [np.array(col(lambda s, i, j=j: s.keys[j][i]), dtype=object)
            for j in range(len(candidate.key_names))]
    return FleetArtifact(
        family=dict(candidate.family), key_names=list(candidate.key_names),
        param_names=list(candidate.param_names), keys=keys,
        params=np.array(col(lambda s, i: s.params[i]), float),
        se=np.array(col(lambda s, i: s.se[i]), float),
        n_obs=np.array(col(lambda s, i: s.n_obs[i]), np.int64),
        loglik=np.array(col(lambda s, i: s.loglik[i]), float),
        status=np.array(col(lambda s, i: s.status[i]), dtype=object),
        source_version=np.array([v for _, _, v in rows], dtype=object),
        pooled=candidate.pooled, unknown_key=candidate.unknown_key,
        metadata={**candidate.metadata, "merged_from": {
            "champion": champion_version, "candidate": candidate_version or "this version"}})


__all__ = ["merge_fleets"]
