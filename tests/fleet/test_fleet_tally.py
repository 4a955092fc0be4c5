"""The server's per-key counters are what the fleet e-processes would compute from the rows
themselves: feeding FleetEvidence from two snapshots' increment decides exactly as feeding it
the rows (``FleetEvidence.tick``); a restarted server (new epoch) counts from zero; the
routing's held keys never reach the candidate."""

import numpy as np
import pytest

from mleops.errors import DataError
from mleops.rollout.kernels.fleet import FleetConfig, FleetEvidence
from mleops.serving.fleet_canary import Routing
from mleops.serving.fleet_tally import KeyTally, increment, values


def _requests(rng, k, n):
    for r in range(n):
        key = rng.integers(0, k, 6)
        arm = (key + r) % 2  # one key's rows of one request share an arm (as routed())
        yield r, key, arm, rng.normal(-1.0, 0.5, 6) - 1.5 * (arm == 1) * (key < 3)


@pytest.mark.parametrize("mode", ["unpaired", "paired"])
def test_increments_of_the_counters_decide_as_the_rows_do(mode):
    rng = np.random.default_rng(0)
    k = 8
    cfg = FleetConfig(mode=mode, min_rows=10, min_units=5, min_blocks=2)
    by_rows, by_tally = FleetEvidence(k, cfg), FleetEvidence(k, cfg)
    tally, before = KeyTally(k, "2"), None
    for _ in range(12):  # ticks
        cols = {"key": [], "request": [], "arm": [], "ll": [], "llc": []}
        for r, key, arm, ll in _requests(rng, k, 40):
            llc = ll + 0.05 * rng.normal(size=ll.size) - 0.4 * (key < 3)
            tally.add(arm, key, ll, llc if mode == "paired" else None)
            cols["key"].append(key)
            cols["request"].append(np.full(key.size, r + 1000 * by_rows.ticks))
            cols["arm"].append(arm)
            cols["ll"].append(ll)
            cols["llc"].append(llc)
        c = {n: np.concatenate(v) for n, v in cols.items()}
        if mode == "paired":
            on = c["arm"] == 1
            by_rows.tick(c["key"][on], c["request"][on], on[on], c["llc"][on], c["ll"][on])
        else:
            by_rows.tick(c["key"], c["request"], c["arm"], c["ll"])
        now = tally.snapshot()
        inc = increment(now, before)
        before = now
        by_tally.update_counters(inc)
    for f in ("decision", "tick", "n_c", "u_c", "blocks"):
        np.testing.assert_array_equal(by_rows.a[f], by_tally.a[f], err_msg=f)
    np.testing.assert_allclose(by_rows.a["score"], by_tally.a["score"], rtol=1e-9)
    assert (by_rows.a["decision"] != 0).any()


def test_a_new_epoch_counts_from_zero_and_out_of_range_keys_are_no_evidence():
    t = KeyTally(3)
    t.add(np.array([1, 0, 1, -1]), np.array([0, 1, 7, 2]), np.array([-1.0, -2.0, -3.0, -4.0]))
    first = t.snapshot()
    counts = values(first)
    assert counts["canary"][3].tolist() == [1.0, 0.0, 0.0]
    assert counts["champion"][3].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(DataError, match="does not hold"):
        values({**first, "keys": 4})
    with pytest.raises(DataError, match="unreadable"):
        values({**first, "paired": {"units": "!!"}})
    restarted = KeyTally(3)
    restarted.add(np.array([1]), np.array([0]), np.array([-5.0]))
    inc = increment(restarted.snapshot(), first)
    assert inc["canary"][1].tolist() == [-5.0, 0.0, 0.0]  # not -5 - (-1)
    same = increment(t.snapshot(), first)
    assert not same["canary"].any()


def test_routing_holds_keys_and_refuses_bad_lists():
    assert Routing.from_dict({"weight": 50, "held": [1, 4]}).held == (1, 4)
    for bad in ({"held": "1"}, {"held": [-1]}, {"held": [True]}, {"held": [1.5]}):
        with pytest.raises(DataError, match="held"):
            Routing.from_dict(bad)


def test_replicas_are_read_together_and_none_is_counted_twice_or_from_zero_again():
    """Two replicas each count their rows. The combined increment is the sum of each one's
    own; a replica missing from a read is carried, so its rows count once when it answers
    again; a restarted one (new epoch) counts from zero; one gone for good is dropped."""
    from mleops.serving.fleet_tally import MISSING_READS, advance, combined

    def rows(t, key, n, value):
        t.add(np.ones(n, int), np.full(n, key), np.full(n, value))

    a, b = KeyTally(3, "2"), KeyTally(3, "2")
    rows(a, 0, 4, -1.0)
    rows(b, 1, 2, -2.0)
    first = combined([a.snapshot(), b.snapshot()])
    inc = increment(first, None)
    assert inc["canary"][3].tolist() == [4, 2, 0]  # rows per key, both replicas
    applied = advance(first, None)
    rows(a, 0, 1, -1.0)
    rows(b, 2, 5, -3.0)
    only_a = combined([a.snapshot()])  # b did not answer this time
    assert increment(only_a, applied)["canary"][3].tolist() == [1, 0, 0]
    applied = advance(only_a, applied)
    assert b.epoch in applied["pods"] and applied["missing"] == {b.epoch: 1}
    both = combined([a.snapshot(), b.snapshot()])
    assert increment(both, applied)["canary"][3].tolist() == [0, 0, 5]  # b's since its last
    applied = advance(both, applied)
    assert applied["missing"] == {}
    restarted = KeyTally(3, "2")
    rows(restarted, 1, 7, -1.0)
    again = combined([a.snapshot(), restarted.snapshot()])
    assert increment(again, applied)["canary"][3].tolist() == [0, 7, 0]
    for _ in range(MISSING_READS + 1):
        applied = advance(combined([a.snapshot(), restarted.snapshot()]), applied)
    assert set(applied["pods"]) == {a.epoch, restarted.epoch}  # the old b is dropped
    with pytest.raises(DataError, match="replicas disagree"):
        combined([a.snapshot(), KeyTally(3, "3").snapshot()])
