"""A fleet candidate gated key by key (decide_fleet on per-row held-out scores and per-key
calibration) and merged: keys found worse keep the champion's parameters and lineage, the
rest move to the candidate, new keys enter when calibrated."""

import numpy as np
import pandas as pd
import pytest

import mleops
from mleops.errors import DataError
from mleops.fleet_artifact import FleetArtifact
from mleops.fleet_merge import merge_fleets
from mleops.gate import decide_fleet
from mleops.gate.fleet_calibration import fleet_calibration

K, N_TRAIN, N_HELD = 40, 400, 2000
DRIFTED = [f"e{i}" for i in range(5)]


def _fleet(rng, scales, keys):
    df = pd.DataFrame({"key": np.repeat(keys, N_TRAIN),
                       "x": rng.gamma(2.0, np.repeat(scales, N_TRAIN))})
    return FleetArtifact.from_fleet(mleops.fit_fleet(df, "gamma", key="key", column="x"))


@pytest.fixture(scope="module")
def gated():
    rng = np.random.default_rng(1)
    keys = np.array([f"e{i}" for i in range(K)])
    scales = rng.uniform(1.0, 3.0, K)
    champion = _fleet(rng, scales, keys)
    drift = np.where(np.isin(keys, DRIFTED), 1.6, 1.0)  # the candidate learnt from bad rows
    cand_keys = np.append(keys, "new")
    candidate = _fleet(rng, np.append(scales * drift, 2.0), cand_keys)
    kh = np.repeat(cand_keys, N_HELD)
    xh = rng.gamma(2.0, np.repeat(np.append(scales, 2.0), N_HELD))
    cand_ll = candidate.loglik_rows(xh, [kh])
    champ_ll = np.full(xh.size, np.nan)
    known = kh != "new"
    champ_ll[known] = champion.loglik_rows(xh[known], [kh[known]])
    calib = fleet_calibration(candidate, xh, [kh])
    decision = decide_fleet(cand_ll, champ_ll, kh, calib)
    return champion, candidate, decision


def test_the_drifted_keys_are_found_and_keep_the_champion(gated):
    champion, candidate, decision = gated
    assert sorted(decision.discoveries) == DRIFTED, decision.table.loc[decision.table.worse]
    t = decision.table
    assert (t.loc[DRIFTED, "take"] == "champion").all()
    assert t.loc["new", "take"] == "candidate" and t.loc["new", "likelihood_outcome"] == "new_key"
    assert t.loc["new", "calibration_passed"]
    merged = merge_fleets(candidate, champion, t["take"].to_dict(), champion_version="4")
    assert len(merged) == K + 1
    by_key = {k[0]: i for i, k in enumerate(merged.key_tuples())}
    ch = {k[0]: i for i, k in enumerate(champion.key_tuples())}
    ca = {k[0]: i for i, k in enumerate(candidate.key_tuples())}
    for key in by_key:
        i = by_key[key]
        if key in DRIFTED:
            assert merged.source_version[i] == "4"
            np.testing.assert_array_equal(merged.params[i], champion.params[ch[key]])
        else:
            assert merged.source_version[i] == ""
            np.testing.assert_array_equal(merged.params[i], candidate.params[ca[key]])


def test_lineage_is_kept_through_a_second_merge_and_bad_takes_are_refused(gated):
    champion, candidate, decision = gated
    take = decision.table["take"].to_dict()
    first = merge_fleets(candidate, champion, take, champion_version="4")
    # the merged version (registered as 5) is the next champion; everything moves now
    again = merge_fleets(candidate, first, dict.fromkeys(take, "champion"),
                         champion_version="5")
    i = [k[0] for k in again.key_tuples()].index("e0")
    j = [k[0] for k in again.key_tuples()].index("e9")
    assert again.source_version[i] == "4" and again.source_version[j] == "5"
    with pytest.raises(DataError, match="take must say"):
        merge_fleets(candidate, champion, {"e1": "maybe"}, champion_version="4")
    with pytest.raises(DataError, match="keeps the champion, which lacks it"):
        merge_fleets(candidate, champion, {"new": "champion"}, champion_version="4")
    with pytest.raises(DataError, match="keeps no key"):
        merge_fleets(candidate, None, dict.fromkeys(take, "excluded"), champion_version="")
