"""The fleet gate: e-BH / BH against hand-computed cases, e-value validity, the merge rule."""

import json

import numpy as np
import pytest
from scipy import stats

from mleops.gate import FleetDecision, FleetGateConfig, GateConfig, bh, decide_fleet, e_bh
from mleops.gate.calibration import pit_summary
from mleops.gate.fleet import _evidence


def _calib(n=2000, bad=False, seed=0):
    u = np.random.default_rng(seed).uniform(size=n)
    if bad:
        u = u ** 3  # PIT piled up near 0: badly calibrated
    return {"kind": "continuous", "n": n, "n_used": n, **pit_summary(u)}


# --- e-BH / BH ----------------------------------------------------------------------------
def test_e_bh_hand_computed():
    # K = 4, q = 0.5: thresholds K/(q k) = 8, 4, 2.67, 2 for k = 1..4
    e = np.array([10.0, 2.5, 5.0, 0.5])  # sorted 10, 5, 2.5, .5: k=1, k=2 pass, k=3, 4 not
    np.testing.assert_array_equal(e_bh(e, 0.5), [True, False, True, False])
    # a later k can qualify when an earlier does not (step-up): e_(3) = 3 >= 2.67
    e = np.array([3.0, 3.0, 3.0, 0.1])
    np.testing.assert_array_equal(e_bh(e, 0.5), [True, True, True, False])
    assert not e_bh(np.array([7.9, 1.0, 1.0, 1.0]), 0.5).any()
    # untested keys (NaN) are not hypotheses: K = 2 here, so 4 >= 2/(0.5*1) rejects
    np.testing.assert_array_equal(e_bh(np.array([4.0, np.nan, 0.2, np.nan]), 0.5),
                                  [True, False, False, False])
    assert e_bh(np.array([np.inf, 1.0]), 0.1).tolist() == [True, False]
    assert not e_bh(np.array([np.nan, np.nan]), 0.1).any()


def test_bh_hand_computed_and_matches_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.5])  # m=4, q=0.1: 0.025, 0.05, 0.075, 0.1
    np.testing.assert_array_equal(bh(p, 0.1), [True, True, True, False])
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = np.concatenate([rng.uniform(size=80), rng.uniform(0, 1e-3, rng.integers(0, 20))])
        for q in (0.05, 0.2):
            np.testing.assert_array_equal(
                bh(p, q), stats.false_discovery_control(p, method="bh") <= q)
    p = np.array([0.001, np.nan, 0.02, np.nan])  # m = 2
    np.testing.assert_array_equal(bh(p, 0.05), [True, False, True, False])


@pytest.mark.parametrize("fn", [e_bh, bh])
def test_multiplicity_bad_input(fn):
    for q in (0.0, 1.0, -0.1, float("nan"), True):
        with pytest.raises(ValueError, match="q"):
            fn(np.array([0.5]), q)
    with pytest.raises(ValueError, match="1-D"):
        fn(np.ones((2, 2)) * 0.5, 0.05)
    with pytest.raises(ValueError, match=">= 0" if fn is e_bh else r"\[0, 1\]"):
        fn(np.array([0.5, -1.0]), 0.05)


# --- the per-key e-value ------------------------------------------------------------------
@pytest.mark.parametrize("noise", ["normal", "t5"])
def test_e_value_valid_at_the_null_boundary(noise):
    """mean(d) = -tolerance exactly (the least favourable null): E[e] <= 1 (+ MC slack)."""
    rng = np.random.default_rng(11)
    K, n, tol = 20_000, 200, 0.002
    eps = rng.standard_normal((K, n)) if noise == "normal" else \
        rng.standard_t(5, (K, n)) / np.sqrt(5 / 3)
    d = -tol + 0.3 * eps
    mean, se = d.mean(1), d.std(1, ddof=1) / np.sqrt(n)
    _, p, e = _evidence(mean, se, np.full(K, n), np.full(K, float(n)), tol, 0.1)
    assert e.min() >= 0
    assert e.mean() < 1.1, e.mean()
    assert abs(np.mean(p < 0.05) - 0.05) < 0.01  # the p-values are (close to) exact too
    # an alternative 0.05 nats worse gets large e-values
    d = -0.05 + 0.3 * rng.standard_normal((200, 2000))
    _, _, e = _evidence(d.mean(1), d.std(1, ddof=1) / np.sqrt(2000), np.full(200, 2000),
                        np.full(200, 2000.0), tol, 0.1)
    assert np.median(e) > 1e6


# --- decide_fleet -------------------------------------------------------------------------
def _fleet(K=200, n=400, worse=(0, 1, 2, 3, 4), delta=0.15, seed=0):
    rng = np.random.default_rng(seed)
    keys = np.repeat(np.array([f"store-{i:03d}" for i in range(K)]), n)
    mu = np.zeros(K)
    mu[list(worse)] = -delta
    champ = rng.normal(-1.0, 1.0, K * n)
    cand = champ + rng.normal(np.repeat(mu, n), 0.3)
    perm = rng.permutation(K * n)  # rows need not come grouped by key
    calib = {f"store-{i:03d}": _calib(n, seed=i) for i in range(K)}
    return cand[perm], champ[perm], keys[perm], calib


@pytest.mark.parametrize("method", ["e-bh", "bh"])
def test_finds_strongly_worse_keys_and_not_null_ones(method):
    cand, champ, keys, calib = _fleet()
    res = decide_fleet(cand, champ, keys, calib, FleetGateConfig(method=method))
    assert isinstance(res, FleetDecision) and res.method == method
    assert sorted(res.discoveries) == [f"store-{i:03d}" for i in range(5)]
    t = res.table
    assert t.loc["store-000", "take"] == "champion" and t.loc["store-000", "worse"]
    assert (t["take"] == "candidate").sum() == 195 and res.passed
    assert res.counts["tested"] == 200 and res.counts["discoveries"] == 5
    assert t.loc["store-007", "n"] == 400
    assert t.loc["store-007", "likelihood_outcome"] in ("not_worse", "inconclusive")
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert len(d["keys"]) == 200 and d["keys"][0]["key"] == "store-000"


def test_merge_rule_per_case():
    rng = np.random.default_rng(1)
    n = 500
    plan = {"worse": -0.3, "same": 0.0, "uncal": 0.0, "few": 0.0, "new_ok": None,
            "new_bad": None, "no_calib": 0.0}
    keys, cand, champ = [], [], []
    for k, delta in plan.items():
        m = 10 if k == "few" else n
        c = rng.normal(-1.0, 1.0, m)
        keys += [k] * m
        champ.append(np.full(m, np.nan) if delta is None else c)
        cand.append(c + rng.normal(0.0 if delta is None else delta, 0.3, m))
    calib = {k: _calib(n, bad=k in ("uncal", "new_bad"), seed=i) for i, k in enumerate(plan)
             if k != "no_calib"}
    res = decide_fleet(np.concatenate(cand), np.concatenate(champ), np.array(keys), calib,
                       FleetGateConfig(min_rows=30))
    t = res.table
    assert t["take"].to_dict() == {"few": "champion", "new_bad": "excluded",
                                "new_ok": "candidate", "no_calib": "champion",
                                "same": "candidate", "uncal": "champion",
                                "worse": "champion"}
    assert res.discoveries == ["worse"]
    assert t.loc["few", "likelihood_outcome"] == "too_few_rows"
    assert np.isnan(t.loc["few", "e_value"]) and np.isnan(t.loc["new_ok", "e_value"])
    assert t.loc["new_ok", "likelihood_outcome"] == "new_key"
    assert "no calibration dict" in t.loc["no_calib", "reason"]
    assert "excluded" in t.loc["new_bad", "reason"]
    assert res.counts["tested"] == 4  # worse, same, uncal, no_calib: K excludes new and few
    assert res.counts["excluded"] == 1 and res.counts["new_keys"] == 2
    # on_inconclusive="reject": keys not shown not_worse keep the champion
    strict = decide_fleet(np.concatenate(cand), np.concatenate(champ), np.array(keys), calib,
                          FleetGateConfig(gate=GateConfig(on_inconclusive="reject")))
    assert strict.table.loc["same", "take"] == (
        "candidate" if strict.table.loc["same", "likelihood_outcome"] == "not_worse"
        else "champion")


def test_no_champion_at_all():
    cand = np.random.default_rng(2).normal(size=600)
    keys = np.repeat(["a", "b", "c"], 200)
    calib = {"a": _calib(200), "b": _calib(200, bad=True)}
    res = decide_fleet(cand, None, keys, calib)
    assert res.table["take"].tolist() == ["candidate", "excluded", "excluded"]
    assert res.discoveries == [] and res.counts["tested"] == 0 and res.passed
    res = decide_fleet(cand, None, keys, {})
    assert not res.passed


def test_bad_input():
    c = np.zeros(10)
    k = np.repeat(["a", "b"], 5)
    cal = {"a": _calib(5), "b": _calib(5)}
    with pytest.raises(ValueError, match="keys has 9 rows but candidate_ll has 10"):
        decide_fleet(c, c, k[:9], cal)
    with pytest.raises(ValueError, match=r"shapes \(10,\) and \(9,\) differ"):
        decide_fleet(c, c[:9], k, cal)
    bad = c.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="candidate_ll: 1 non-finite .* row 3"):
        decide_fleet(bad, c, k, cal)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        decide_fleet(np.array([]), None, np.array([]), cal)
    with pytest.raises(ValueError, match="keys: expected a non-empty 1-D"):
        decide_fleet(c, c, k.reshape(2, 5), cal)
    half = c.copy()
    half[:2] = np.nan  # key "a" partly NaN
    with pytest.raises(ValueError, match="some but not all rows .* 'a'"):
        decide_fleet(c, half, k, cal)
    inf = c.copy()
    inf[7] = -np.inf
    with pytest.raises(ValueError, match="champion_ll: 1 infinite"):
        decide_fleet(c, inf, k, cal)
    with pytest.raises(ValueError, match="calib must be a dict"):
        decide_fleet(c, c, k, [cal])
    with pytest.raises(ValueError, match=r"calib\['a'\]"):
        decide_fleet(c, c, k, {"a": {"kind": "nope"}}, FleetGateConfig(min_rows=2))
    for kw, msg in ((dict(fdr=1.0), "fdr"), (dict(method="holm"), "method"),
                    (dict(min_rows=1), "min_rows"), (dict(batch=0), "batch"),
                    (dict(gate=GateConfig(test="bootstrap")), "test")):
        with pytest.raises(ValueError, match=msg):
            FleetGateConfig(**kw)
