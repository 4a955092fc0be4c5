"""The canary rollout's sequential test: algebra, exact resumption, what is compared (blocks,
requests, no clipping), the long-run variance, error rates on a few simulated streams."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mleops.errors import DataError
from mleops.rollout.kernels.statistics import (
    SequentialTest,
    Summary,
    TestConfig,
)

SPLIT = 9  # champion rows per canary row in split (unpaired) mode


def streams(rng, mode, reps, n, drop=0.0, sd=None, outliers=0):
    """Per-row log-likelihoods: paired rows share the champion's own spread."""
    if mode == "paired":
        p = rng.normal(-1.0, 0.8, (reps, n))
        c = p - drop + rng.normal(0.0, sd or 0.25, (reps, n))
    else:
        c = -1.0 - drop + rng.normal(0.0, sd or 0.7, (reps, n))
        p = -1.0 + rng.normal(0.0, sd or 0.7, (reps, SPLIT * n))
    for _ in range(outliers):
        c[np.arange(reps), rng.integers(0, min(n, 1000), reps)] = -1000.0
    return c, p


def look(mode):
    return (10, 10) if mode == "paired" else (50, 50 * SPLIT)


def feed(test, c, p, kc, kp, start=0, stop=None):
    """Blocks start..stop of one stream (one block a tick); the verdict after each."""
    stop = stop if stop is not None else c.size // kc
    out = []
    for j in range(start, stop):
        test.update_block(c[j * kc:(j + 1) * kc], p[j * kp:(j + 1) * kp])
        out.append(test.verdict())
    return out


def first_decision(verdicts):
    return next((v for v in verdicts if v.decision != "continue"), None)


# --- Summary ---------------------------------------------------------------------------------
def test_summary_algebra(rng):
    x, y = rng.normal(2.0, 3.0, 50), rng.normal(-1.0, 0.5, 30)
    s = Summary.of(x) + Summary.of(y)
    both = np.concatenate([x, y])
    assert s.n == 80 and s.mean == pytest.approx(both.mean())
    assert s.var == pytest.approx(both.var(ddof=1))
    back = s - Summary.of(y)
    assert back.n == 50 and back.mean == pytest.approx(x.mean())
    assert back.var == pytest.approx(x.var(ddof=1))
    assert Summary.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert Summary.of([3.0]).var == 0.0 and np.isnan(Summary().mean)
    with pytest.raises(DataError):
        Summary.from_dict({"n": 1})


# --- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{"mode": "shadow"}, {"min_drop": 0.0}, {"min_drop": -1.0},
                                 {"alpha": 0.0}, {"alpha": 1.0}, {"beta": 1.5},
                                 {"min_rows": 1}, {"min_rows": 10.5}, {"min_blocks": 1},
                                 {"scale_floor": -1.0}, {"absurd_nats": 0.0},
                                 {"min_drop": float("nan")}])
def test_bad_config_is_a_data_error(bad):
    with pytest.raises(DataError):
        TestConfig(**bad)


def test_config_round_trip_and_unknown_keys():
    cfg = TestConfig(mode="paired", min_drop=0.1, alpha=0.05, beta=0.1, min_rows=50,
                     min_blocks=3, scale_floor=0.0, absurd_nats=50.0)
    assert TestConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(DataError):
        TestConfig.from_dict({"mode": "paired", "alpah": 0.05})
    with pytest.raises(DataError, match="clip"):  # the old clipping knob is gone, loudly
        TestConfig.from_dict({"mode": "paired", "clip": 16.0})


# --- bad data --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_bad_rows_are_data_errors(mode):
    t = SequentialTest(TestConfig(mode=mode))
    with pytest.raises(DataError):
        t.update_block(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(DataError):
        t.update_block(["a"], [1.0])
    with pytest.raises(DataError, match="request ids"):
        t.update_block([1.0, 2.0], [1.0, 2.0], canary_requests=[1])
    with pytest.raises(DataError):
        SequentialTest(TestConfig()).update_sums(Summary(-5.0, 1.0, 1.0), Summary())
    assert t.verdict().rows_canary == 0  # nothing half-applied


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_rows_that_are_not_numbers_or_absurd_are_left_out_and_counted(mode):
    t = SequentialTest(TestConfig(mode=mode))
    c = np.array([-1.0, np.nan, -np.inf, -1e6, -1.2])
    p = np.array([-1.1, -0.9, -1.0, -1.0, -1.3])
    t.update_block(c, p)
    assert t.excluded["canary"] == {"not_finite": 2, "absurd": 1}
    assert t.verdict().rows_canary == 2  # the test weighs the other rows only
    back = SequentialTest(t.config, json.loads(json.dumps(t.to_dict())))
    assert back.excluded == t.excluded


def test_paired_needs_the_same_rows():
    with pytest.raises(DataError, match="same rows"):
        SequentialTest(TestConfig(mode="paired")).update_block([1.0, 2.0], [1.0])
    with pytest.raises(DataError, match="same rows"):
        SequentialTest(TestConfig(mode="paired")).update_block(
            [1.0, 2.0], [1.0, 2.0], canary_requests=[0, 1], champion_requests=[0, 0])
    with pytest.raises(DataError, match="paired"):
        SequentialTest(TestConfig(mode="paired")).update_sums(Summary(1, 1, 1), Summary(1, 1, 1))


def test_state_from_another_config_or_version_is_refused():
    state = SequentialTest(TestConfig(alpha=0.01)).to_dict()
    with pytest.raises(DataError):
        SequentialTest(TestConfig(alpha=0.05), state)
    with pytest.raises(DataError, match="version"):  # a v1 (clipped) state is not resumed
        SequentialTest(TestConfig(), {"version": 1, "config": TestConfig().to_dict()})


def test_a_version_2_state_resumes(rng):
    """Version 2 lacked only the sums-block count (its blocks were rows blocks: 0)."""
    t = SequentialTest(TestConfig())
    t.update_block(rng.normal(-1, 0.7, 50), rng.normal(-1, 0.7, 450))
    old = {**t.to_dict(), "version": 2}
    old["acc"] = old["acc"][:-1]
    assert SequentialTest(TestConfig(), old).verdict() == t.verdict()


# --- exact resumption ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["paired", "unpaired"])
@pytest.mark.parametrize("cut", [1, 7, 30])
def test_state_round_trip_resumes_identically(rng, mode, cut):
    c, p = streams(rng, mode, 1, 2000, drop=0.03, outliers=2)
    kc, kp = look(mode)
    cfg = TestConfig(mode=mode)
    straight = feed(SequentialTest(cfg), c[0], p[0], kc, kp)
    first = SequentialTest(cfg)
    feed(first, c[0], p[0], kc, kp, stop=cut)
    resumed = SequentialTest(cfg, json.loads(json.dumps(first.to_dict())))
    assert feed(resumed, c[0], p[0], kc, kp, start=cut) == straight[cut:]


def test_a_block_with_one_arm_waits_for_the_other(rng):
    cfg = TestConfig()
    a, b = SequentialTest(cfg), SequentialTest(cfg)
    c, p = rng.normal(-1, 0.7, 40), rng.normal(-1, 0.7, 400)
    a.update_block(c[:20], [])  # canary rows first, the champion's in the next tick
    a.update_block(c[20:], p)
    b.update_block(c, p)
    assert a.verdict() == b.verdict()


def test_sums_blocks_are_row_blocks_without_order(rng):
    """With at most two rows per arm in a block there are no lag products: the sums path
    sees what the rows path sees, and its variance is the larger of that and the
    between-block one (sums have no request ids: the block is their unit)."""
    cfg = TestConfig(min_rows=10)
    rows, sums = SequentialTest(cfg), SequentialTest(cfg)
    for _ in range(60):
        c, p = rng.normal(-1.2, 0.7, 2), rng.normal(-1.0, 0.7, 2)
        rows.update_block(c, p)
        sums.update_sums(Summary.of(c), Summary.of(p))
    a, b = rows.verdict(), sums.verdict()
    assert a.rows_canary == b.rows_canary == 120 and a.mean_diff == pytest.approx(b.mean_diff)
    (_, var_rows, parts), (_, var_sums, _) = rows.estimate(), sums.estimate()
    assert var_sums == pytest.approx(max(var_rows, parts["between_blocks"]))


def test_sums_count_a_block_not_a_row_as_the_unit(rng):
    """Prometheus sums of requests of 20 correlated rows (ICC 0.3): without request ids the
    rows would pass for independent (7x too little variance); the between-block variance
    gives about what the rows path gets from the request ids, and the burn-in counts
    effective rows."""
    m, icc = 20, 0.3
    cfg = TestConfig(scale_floor=0.0, min_drop=0.001)
    rows, sums = SequentialTest(cfg), SequentialTest(cfg)
    for _ in range(300):
        arms = []
        for k in (5, 20):  # requests per arm in the tick
            e = np.sqrt(1 - icc) * rng.standard_normal(k * m) + np.sqrt(icc) * np.repeat(
                rng.standard_normal(k), m)
            arms.append((-1 + 0.7 * e, np.repeat(np.arange(k), m)))
        (c, gc), (p, gp) = arms
        rows.update_block(c, p, canary_requests=gc, champion_requests=gp)
        sums.update_sums(Summary.of(c), Summary.of(p))
    (_, var_rows, _), (_, var_sums, parts) = rows.estimate(), sums.estimate()
    naive = var_sums * parts["effective_share"]
    assert 0.75 < var_sums / var_rows < 1.33
    assert var_sums / naive > 5  # rows as units: (icc + (1 - icc) / m) m = 6.7x too small


# --- what is compared ------------------------------------------------------------------------
def test_a_drift_both_arms_share_cancels_in_split_mode(rng):
    """Everyone's log-likelihood rises over the rollout while the canary's share ramps: the
    arms are compared within each block, so the drift changes nothing at all."""
    cfg = TestConfig(min_rows=10)
    flat, drifting = SequentialTest(cfg), SequentialTest(cfg)
    for k in range(200):
        share = 0.1 if k < 70 else (0.25 if k < 140 else 0.5)
        n_c = int(100 * share)
        c, p = rng.normal(-1, 0.7, n_c), rng.normal(-1, 0.7, 100 - n_c)
        flat.update_block(c, p)
        drifting.update_block(c + 0.004 * k, p + 0.004 * k)  # 0.8 nats over the rollout
    a, b = flat.verdict(), drifting.verdict()
    assert a.decision == b.decision
    assert a.mean_diff == pytest.approx(b.mean_diff, abs=1e-12)
    assert a.ci_low == pytest.approx(b.ci_low, rel=1e-9) and a.log_e_drop == pytest.approx(
        b.log_e_drop, abs=1e-9)


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_a_request_counts_once_however_many_rows_it_has(rng, mode):
    """Rows of one request share its effect: twenty copies of a row are one request."""
    cfg = TestConfig(mode=mode, min_rows=10)
    one, many = SequentialTest(cfg), SequentialTest(cfg)
    for _ in range(30):
        c, p = rng.normal(-1.2, 0.5, 8), rng.normal(-1.0, 0.5, 8 if mode == "paired" else 40)
        one.update_block(c, p)
        ids_c, ids_p = np.repeat(np.arange(c.size), 20), np.repeat(np.arange(p.size), 20)
        many.update_block(np.repeat(c, 20), np.repeat(p, 20), canary_requests=ids_c,
                          champion_requests=ids_p)
    a, b = one.verdict(), many.verdict()
    assert b.rows_canary == 20 * a.rows_canary
    assert (a.mean_diff, a.ci_low, a.ci_high, a.log_e_drop) == pytest.approx(
        (b.mean_diff, b.ci_low, b.ci_high, b.log_e_drop))


def test_nothing_is_clipped_the_test_is_about_the_mean(rng):
    """A canary better on average by rare large gains: the estimate is the plain mean."""
    t = SequentialTest(TestConfig(mode="paired"))
    p = rng.normal(-1.0, 0.8, 4000)
    c = p - 0.01 + 30.0 * (rng.random(4000) < 0.01)  # +30 nats on 1% of rows
    for j in range(0, 4000, 10):
        t.update_block(c[j:j + 10], p[j:j + 10])
    v = t.verdict()
    assert v.mean_diff == pytest.approx(np.mean(c - p), rel=1e-9)
    assert v.decision != "rollback" and v.mean_diff > 0


def test_serially_correlated_requests_count_for_less(rng):
    """The long-run variance of AR(1) differences is about (1 + rho) / (1 - rho) times the
    independent one: the same mean, a larger variance."""
    n, rho = 6000, 0.5
    e = rng.standard_normal(n)
    ar = np.empty(n)
    ar[0] = e[0]
    for i in range(1, n):
        ar[i] = rho * ar[i - 1] + np.sqrt(1 - rho ** 2) * e[i]
    iid = rng.permutation(ar)  # the same values, the order broken
    var = []
    for d in (iid, ar):
        t = SequentialTest(TestConfig(mode="paired", scale_floor=0.0, min_drop=0.001))
        for j in range(0, n, 20):
            t.update_block(d[j:j + 20], np.zeros(20))
        mean, v, parts = t.estimate()
        assert mean == pytest.approx(d.mean())
        var.append(v)
    assert var[0] == pytest.approx(np.var(iid, ddof=1) / n, rel=0.05)
    ratio = var[1] / var[0]
    # (1 + 0.5) / (1 - 0.5) = 3; a 10-lag Bartlett kernel alone would give about 2.64
    assert 2.75 < ratio < 3.3


# --- error rates on simulated streams (the benchmark measures them at scale) ------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_aa_false_rollbacks_are_rare_and_outliers_do_not_force_one(rng, mode):
    kc, kp = look(mode)
    c, p = streams(rng, mode, 100, 2000 if mode == "paired" else 5000, outliers=3)
    rolled = [first_decision(feed(SequentialTest(TestConfig(mode=mode)), c[i], p[i], kc, kp))
              for i in range(c.shape[0])]
    assert sum(v is not None and v.decision == "rollback" for v in rolled) <= 2


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_clear_drop_is_rolled_back_and_good_canary_is_not_worse(rng, mode):
    kc, kp = look(mode)
    c, p = streams(rng, mode, 1, 6000, drop=0.15)
    v = first_decision(feed(SequentialTest(TestConfig(mode=mode)), c[0], p[0], kc, kp))
    assert v.decision == "rollback" and v.ci_high < 0 < v.log_e_drop
    assert "rollback" in v.reason and "nats/row" in v.reason
    c, p = streams(rng, mode, 1, 6000, drop=-0.02)
    v = first_decision(feed(SequentialTest(TestConfig(mode=mode)), c[0], p[0], kc, kp))
    assert v.decision == "not_worse" and v.mean_diff > -TestConfig().min_drop


def test_rare_bad_rows_still_count_in_shadow_mode(rng):
    # the models agree to 0.01 nats on 97% of rows and the canary is 3 nats worse on the rest
    p = rng.normal(-1.0, 0.8, 3000)
    c = p + rng.normal(0.0, 0.01, 3000) - 3.0 * (rng.random(3000) < 0.03)
    v = first_decision(feed(SequentialTest(TestConfig(mode="paired")), c, p, 10, 10))
    assert v.decision == "rollback"


def test_better_on_average_canary_is_not_rolled_back_early(rng):
    # 0.01 nats worse on the typical row, 3 nats better on 3% of rows (+0.08 on average): the
    # first rows often hold no good row, and their tiny spread must not pass for precision
    rolled = 0
    for _ in range(100):
        p = rng.normal(-1.0, 0.8, 1500)
        c = p - 0.01 + rng.normal(0.0, 0.01, p.shape) + 3.0 * (rng.random(p.shape) < 0.03)
        v = first_decision(feed(SequentialTest(TestConfig(mode="paired")), c, p, 10, 10))
        rolled += v is not None and v.decision == "rollback"
    assert rolled <= 1


def test_no_decision_before_the_burn_in_and_json_verdicts():
    t = SequentialTest(TestConfig(mode="unpaired", min_rows=100))
    first = t.verdict()
    assert first.decision == "continue" and np.isnan(first.mean_diff)
    json.dumps(first.to_dict(), allow_nan=False)
    t.update_block(np.full(50, -5.0), np.full(500, -1.0))  # a huge drop, but too few rows
    v = t.verdict()
    assert v.decision == "continue" and "need 100" in v.reason
    t.update_block(np.full(60, -5.0), np.full(500, -1.0))
    v = t.verdict()  # enough rows, but two ticks are not enough to trust a variance
    assert v.decision == "continue" and "ticks with both arms" in v.reason
    json.dumps(v.to_dict(), allow_nan=False)
    json.dumps(t.to_dict(), allow_nan=False)
