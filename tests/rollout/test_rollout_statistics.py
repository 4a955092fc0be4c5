"""The canary rollout's sequential test: algebra, exact resumption, error rates, robustness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mleops.errors import DataError
from mleops.rollout.statistics import (
    DECISIONS,
    SequentialTest,
    Summary,
    TestConfig,
)
from mleops.rollout.trace import trace

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
    return (10, 10) if mode == "paired" else (10, 10 * SPLIT)


def feed(test, c, p, kc, kp, start=0, stop=None):
    """Batches start..stop of one stream; the verdict after each."""
    stop = stop if stop is not None else c.size // kc
    out = []
    for j in range(start, stop):
        test.update_rows(c[j * kc:(j + 1) * kc], p[j * kp:(j + 1) * kp])
        out.append(test.verdict())
    return out


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
                                 {"min_rows": 1}, {"min_rows": 10.5}, {"clip": -1.0},
                                 {"min_drop": float("nan")}])
def test_bad_config_is_a_data_error(bad):
    with pytest.raises(DataError):
        TestConfig(**bad)


def test_config_round_trip_and_unknown_keys():
    cfg = TestConfig(mode="paired", min_drop=0.1, alpha=0.05, beta=0.1, min_rows=50, clip=0.0)
    assert TestConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(DataError):
        TestConfig.from_dict({"mode": "paired", "alpah": 0.05})


# --- bad data --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_bad_rows_are_data_errors(mode):
    t = SequentialTest(TestConfig(mode=mode))
    with pytest.raises(DataError, match="NaN"):
        t.update_rows([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(DataError):
        t.update_rows([1.0, np.inf], [1.0, 2.0])
    with pytest.raises(DataError):
        t.update_rows(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(DataError):
        t.update_rows(["a"], [1.0])
    with pytest.raises(DataError):
        t.update_sums(Summary(-5.0, 1.0, 1.0), Summary())
    assert t.verdict().rows_canary == 0  # nothing half-applied


def test_paired_needs_equal_lengths():
    with pytest.raises(DataError, match="same rows"):
        SequentialTest(TestConfig(mode="paired")).update_rows([1.0, 2.0], [1.0])


def test_state_from_another_config_is_refused():
    state = SequentialTest(TestConfig(alpha=0.01)).to_dict()
    with pytest.raises(DataError):
        SequentialTest(TestConfig(alpha=0.05), state)
    with pytest.raises(DataError):
        SequentialTest(TestConfig(), {"version": 1, "config": TestConfig().to_dict()})


# --- exact resumption and the vectorised path ------------------------------------------------
@pytest.mark.parametrize("mode", ["paired", "unpaired"])
@pytest.mark.parametrize("cut", [3, 40])  # before and after the clipping reference fills
def test_state_round_trip_resumes_identically(rng, mode, cut):
    c, p = streams(rng, mode, 1, 800, drop=0.03, outliers=2)
    kc, kp = look(mode)
    cfg = TestConfig(mode=mode)
    straight = feed(SequentialTest(cfg), c[0], p[0], kc, kp)
    first = SequentialTest(cfg)
    feed(first, c[0], p[0], kc, kp, stop=cut)
    resumed = SequentialTest(cfg, json.loads(json.dumps(first.to_dict())))
    assert feed(resumed, c[0], p[0], kc, kp, start=cut) == straight[cut:]


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
@pytest.mark.parametrize("clip", [TestConfig().clip, 2.0, 0.0])
def test_trace_is_the_batch_loop(rng, mode, clip):
    c, p = streams(rng, mode, 3, 600, drop=0.05, outliers=2)
    kc, kp = look(mode)
    cfg = TestConfig(mode=mode, clip=clip)
    path = trace(cfg, c, p, kc, kp)
    for s in range(3):
        verdicts = feed(SequentialTest(cfg), c[s], p[s], kc, kp)
        assert [DECISIONS.index(v.decision) for v in verdicts] == path.decision[s].tolist()
        assert np.allclose([v.log_e_drop for v in verdicts], path.log_e_drop[s], atol=1e-9)
        assert np.allclose([v.log_e_safe for v in verdicts], path.log_e_safe[s], atol=1e-9)
        assert np.allclose([v.mean_diff for v in verdicts], path.mean_diff[s], atol=1e-12)
        assert [v.rows_canary for v in verdicts] == path.rows_canary.tolist()


def test_update_sums_equals_update_rows_without_clipping(rng):
    cfg = TestConfig(mode="unpaired", clip=0.0)
    rows, sums = SequentialTest(cfg), SequentialTest(cfg)
    for _ in range(20):
        c, p = rng.normal(-1.05, 0.7, 40), rng.normal(-1.0, 0.7, 360)
        rows.update_rows(c, p)
        sums.update_rows([], [])
        sums.update_sums(Summary.of(c), Summary.of(p))
        a, b = rows.verdict(), sums.verdict()
        assert a.decision == b.decision and (a.rows_canary, a.rows_champion) == (
            b.rows_canary, b.rows_champion)
        assert np.allclose([a.mean_diff, a.log_e_drop, a.log_e_safe, a.ci_low, a.ci_high],
                           [b.mean_diff, b.log_e_drop, b.log_e_safe, b.ci_low, b.ci_high])


def test_paired_rows_and_sums_combine(rng):
    t = SequentialTest(TestConfig(mode="paired"))
    p = rng.normal(-1.0, 0.8, 500)
    t.update_rows(p - 0.2 + rng.normal(0, 0.25, 500), p)
    only_rows = t.verdict()
    t.update_sums(Summary.of(rng.normal(-1.2, 0.8, 300)), Summary.of(rng.normal(-1.0, 0.8, 300)))
    v = t.verdict()
    assert (v.rows_canary, v.rows_champion) == (800, 800)
    assert v.ci_high - v.ci_low < only_rows.ci_high - only_rows.ci_low


# --- error rates and power -------------------------------------------------------------------
@pytest.mark.parametrize("mode,reps,n", [("paired", 400, 5000), ("unpaired", 200, 3000)])
def test_aa_false_rollbacks_are_rare(rng, mode, reps, n):
    c, p = streams(rng, mode, reps, n)
    path = trace(TestConfig(mode=mode), c, p, *look(mode))
    assert (path.decision == 1).any(axis=1).mean() <= 0.03


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_a_few_huge_outliers_do_not_force_a_rollback(rng, mode):
    c, p = streams(rng, mode, 200, 2000, outliers=3)
    path = trace(TestConfig(mode=mode), c, p, *look(mode))
    assert (path.decision == 1).any(axis=1).mean() <= 0.03
    t = SequentialTest(TestConfig(mode=mode))  # even when they come first
    c0 = c[0].copy()
    c0[:3] = -1e6
    assert all(v.decision != "rollback" for v in feed(t, c0, p[0], *look(mode)))


@pytest.mark.parametrize("mode", ["paired", "unpaired"])
def test_clear_drop_is_rolled_back_and_good_canary_is_not_worse(rng, mode):
    kc, kp = look(mode)
    c, p = streams(rng, mode, 1, 3000, drop=0.15)
    v = [x for x in feed(SequentialTest(TestConfig(mode=mode)), c[0], p[0], kc, kp)
         if x.decision != "continue"][0]
    assert v.decision == "rollback" and v.ci_high < 0 < v.log_e_drop
    assert "rollback" in v.reason and "nats/row" in v.reason
    c, p = streams(rng, mode, 1, 3000, drop=-0.02)
    v = [x for x in feed(SequentialTest(TestConfig(mode=mode)), c[0], p[0], kc, kp)
         if x.decision != "continue"][0]
    assert v.decision == "not_worse" and v.mean_diff > -TestConfig().min_drop


def test_rare_bad_rows_still_count_in_shadow_mode(rng):
    # the models agree to 0.01 nats on 97% of rows and the canary is 3 nats worse on the rest:
    # clipping at the differences' own (tiny) scale would hide exactly this failure
    p = rng.normal(-1.0, 0.8, 3000)
    c = p + rng.normal(0.0, 0.01, 3000) - 3.0 * (rng.random(3000) < 0.03)
    verdicts = feed(SequentialTest(TestConfig(mode="paired")), c, p, 10, 10)
    assert [v.decision for v in verdicts if v.decision != "continue"][0] == "rollback"


def test_better_on_average_canary_is_not_rolled_back_early(rng):
    # 0.01 nats worse on the typical row, 3 nats better on 3% of rows (+0.08 on average): the
    # first 100 rows often hold no good row, and their tiny spread must not pass for precision
    p = rng.normal(-1.0, 0.8, (200, 2000))
    c = p - 0.01 + rng.normal(0.0, 0.01, p.shape) + 3.0 * (rng.random(p.shape) < 0.03)
    path = trace(TestConfig(mode="paired"), c, p, 10)
    assert (path.decision == 1).any(axis=1).mean() <= 0.01


def test_no_decision_before_min_rows_and_json_verdicts():
    t = SequentialTest(TestConfig(mode="unpaired", min_rows=100))
    first = t.verdict()
    assert first.decision == "continue" and np.isnan(first.mean_diff)
    json.dumps(first.to_dict(), allow_nan=False)
    t.update_rows(np.full(50, -5.0), np.full(500, -1.0))  # a huge drop, but too few rows
    v = t.verdict()
    assert v.decision == "continue" and "need 100" in v.reason
    json.dumps(v.to_dict(), allow_nan=False)
    json.dumps(t.to_dict(), allow_nan=False)
