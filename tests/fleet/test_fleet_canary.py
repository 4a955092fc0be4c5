"""A fleet canary inside one server: per-(key, request) routing that is exact in share and
deterministic, rows scored under the table of their arm, keys only one table knows answered
without evidence, the routing file re-read on change and fail-safe when unreadable."""

import json
import os

import numpy as np
import pandas as pd
import pytest

import mleops
from mleops.errors import DataError
from mleops.fleet_artifact import FleetArtifact
from mleops.serving.fleet_canary import (
    ARM_CANARY,
    ARM_CHAMPION,
    ARM_NONE,
    Routing,
    RoutingFile,
    routed,
    score,
    write_routing,
)


def _fleet(seed: int, keys: list[str], scale: float = 1.0) -> FleetArtifact:
    rng = np.random.default_rng(seed)
    n = 200
    df = pd.DataFrame({"store": np.repeat(keys, n),
                       "x": rng.gamma(2.0, scale, n * len(keys))})
    return FleetArtifact.from_fleet(mleops.fit_fleet(df, "gamma", key="store", column="x"))


@pytest.fixture(scope="module")
def tables():
    champion = _fleet(0, ["a", "b", "c", "old"])
    candidate = _fleet(1, ["a", "b", "c", "new"], scale=1.5)
    return champion, candidate


def test_the_share_is_the_weight_per_key_and_the_same_request_goes_the_same_way():
    labels = np.array(["a"] * 5 + ["b"] * 5)
    hits = np.array([routed(labels, f"req-{i}", 30) for i in range(4000)])
    assert (hits[:, :5] == hits[:, :1]).all()  # one key's rows in one request: one arm
    share = hits[:, [0, 5]].mean(axis=0)
    assert np.all(np.abs(share - 0.30) < 0.03), share
    assert (hits[:, 0] != hits[:, 5]).any()  # keys are routed apart
    again = np.array([routed(labels, f"req-{i}", 30) for i in range(4000)])
    assert (again == hits).all()  # deterministic
    assert not routed(labels, "r", 0).any() and routed(labels, "r", 100).all()


def test_rows_are_scored_under_their_arms_table(tables):
    champion, candidate = tables
    keys = [np.array(["a", "b", "c", "old", "new"] * 4)]
    x = np.linspace(0.5, 6.0, 20)
    for rid in ("r1", "r2", "r3"):
        out = score(champion, candidate, x, keys, request_id=rid, routing=Routing(50))
        hit = routed(keys[0], rid, 50) & np.isin(keys[0], ["a", "b", "c"])
        assert (out.arm[hit] == ARM_CANARY).all()
        assert (out.arm[np.isin(keys[0], ["old", "new"])] == ARM_NONE).all()
        assert (out.arm[~hit & np.isin(keys[0], ["a", "b", "c"])] == ARM_CHAMPION).all()
        want_c = candidate.loglik_rows(x[hit], [keys[0][hit]])
        np.testing.assert_allclose(out.loglik[hit], want_c, rtol=1e-12)
        champ = keys[0] != "new"
        np.testing.assert_allclose(out.loglik[champ & ~hit],
                                   champion.loglik_rows(x[champ & ~hit],
                                                        [keys[0][champ & ~hit]]), rtol=1e-12)
        new = keys[0] == "new"  # only the candidate knows it: it answers, no evidence
        np.testing.assert_allclose(out.loglik[new], candidate.loglik_rows(x[new], [keys[0][new]]))
        assert (out.by_candidate == (hit | new)).all()
        assert (out.key_index == candidate.positions(keys)).all() and \
            (out.key_index[keys[0] == "old"] == -1).all()


def test_shadow_answers_with_the_champion_and_scores_the_mirrored_rows(tables):
    champion, candidate = tables
    keys = [np.array(["a", "b", "c"] * 10)]
    x = np.linspace(0.5, 6.0, 30)
    out = score(champion, candidate, x, keys, request_id="s", routing=Routing(100, "shadow"))
    np.testing.assert_allclose(out.loglik, champion.loglik_rows(x, keys), rtol=1e-12)
    np.testing.assert_allclose(out.loglik_canary, candidate.loglik_rows(x, keys), rtol=1e-12)
    assert (out.arm == ARM_CANARY).all()


def test_a_key_neither_table_knows_is_refused_by_name(tables):
    champion, candidate = tables
    with pytest.raises(DataError, match="'nowhere'"):
        score(champion, candidate, np.array([1.0, 2.0]), [np.array(["a", "nowhere"])],
              request_id="r", routing=Routing(50))


def test_a_canary_of_another_family_or_key_is_refused(tables):
    champion, _ = tables
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"store": np.repeat(["a", "b"], 100), "x": rng.lognormal(0, 1, 200)})
    other = FleetArtifact.from_fleet(mleops.fit_fleet(df, "lognorm", key="store", column="x"))
    with pytest.raises(DataError, match="same family and keys"):
        score(champion, other, np.array([1.0]), [np.array(["a"])], request_id="r",
              routing=Routing(50))


def test_the_routing_file_is_reread_on_change_and_fails_safe(tmp_path):
    path = str(tmp_path / "routing.json")
    rf = RoutingFile(path)
    assert rf.current() == Routing() and "no routing file" in rf.error
    write_routing(path, Routing(25, "shadow"))
    assert rf.current() == Routing(25, "shadow") and rf.error == ""
    write_routing(path, Routing(50))
    assert rf.current() == Routing(50)
    for bad in ('{"weight": 150}', '{"weight": 10, "mode": "all"}', "not json", "[1]"):
        with open(path, "w") as f:
            f.write(bad)
        os.utime(path, ns=(1, len(bad) * 10**9))  # a change the stat sees
        assert rf.current() == Routing() and "refused" in rf.error, bad
    with pytest.raises(DataError, match="0..100"):
        Routing(True)
    write_routing(path, Routing(10))
    write_routing(path, Routing(10, held=(3, 1)))
    assert json.load(open(path)) == {"weight": 10, "mode": "split", "held": [3, 1],
                                     "promoted": []}
    assert rf.current() == Routing(10, "split", (3, 1))


def test_held_keys_are_answered_by_the_champion_and_give_no_canary_rows(tables):
    champion, candidate = tables
    keys = [np.array(["a", "b", "c", "new"] * 3)]
    x = np.linspace(0.5, 6.0, 12)
    b = int(candidate.positions([np.array(["b"])])[0])
    out = score(champion, candidate, x, keys, request_id="r", routing=Routing(100, held=(b,)))
    is_b = keys[0] == "b"
    assert (out.arm[is_b] == ARM_CHAMPION).all() and not out.by_candidate[is_b].any()
    assert (out.arm[np.isin(keys[0], ["a", "c"])] == ARM_CANARY).all()
    np.testing.assert_allclose(out.loglik[is_b],
                               champion.loglik_rows(x[is_b], [keys[0][is_b]]), rtol=1e-12)


@pytest.mark.parametrize("mode", ["split", "shadow"])
def test_promoted_keys_are_answered_by_the_candidate_and_give_no_evidence(tables, mode):
    """A key the rollout already promoted leaves the ramp: every row of it (weight 0 or
    not, shadow or not) is answered under the candidate, as evidence for neither arm."""
    champion, candidate = tables
    keys = [np.array(["a", "b", "c", "new"] * 3)]
    x = np.linspace(0.5, 6.0, 12)
    a = int(candidate.positions([np.array(["a"])])[0])
    out = score(champion, candidate, x, keys, request_id="r",
                routing=Routing(0, mode, promoted=(a,)))
    is_a = keys[0] == "a"
    assert (out.arm[is_a] == ARM_NONE).all() and out.by_candidate[is_a].all()
    np.testing.assert_allclose(out.loglik[is_a],
                               candidate.loglik_rows(x[is_a], [keys[0][is_a]]), rtol=1e-12)
    others = np.isin(keys[0], ["b", "c"])  # weight 0: the champion's, as evidence of its arm
    assert (out.arm[others] == ARM_CHAMPION).all() and not out.by_candidate[others].any()
    with pytest.raises(DataError, match="both held and promoted"):
        Routing(10, held=(a,), promoted=(a,))
    assert Routing.from_dict(Routing(10, promoted=(a, 2)).to_dict()) == \
        Routing(10, promoted=(a, 2))
