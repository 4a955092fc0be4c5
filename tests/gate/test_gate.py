"""Held-out evaluation, calibration and the registration gate, on real fits with known truth."""

import json

import numpy as np
import pytest
from scipy import stats

import mleops
from mleops.artifact import ModelArtifact
from mleops.gate.calibration import CALIBRATION_KEYS, calibration, heldout_loglik, summary_metrics
from mleops.gate.decision import GateConfig, GateDecision, decide
from mleops.gate.report import write_report

SHAPE, SCALE = 2.5, 1.5
N_TEST = 20_000
MARGIN = 0.002  # non-inferiority margin (nats per row) for the "equally good or better" cases


def _artifact(x, family="gamma", **kw) -> ModelArtifact:
    return ModelArtifact.from_fit(mleops.fit(x, family, **kw))


@pytest.fixture(scope="module")
def gamma_world():
    """Truth Gamma(2.5, 1.5): held-out rows from the truth and several trained models."""
    rng = np.random.default_rng(2024)
    test = rng.gamma(SHAPE, SCALE, N_TEST)
    champ_train = rng.gamma(SHAPE, SCALE, 500)
    biased_train = rng.gamma(SHAPE, SCALE, 5000)
    biased_train = biased_train[biased_train < np.quantile(biased_train, 0.9)]  # top 10% lost
    models = {
        "champion": _artifact(champ_train),
        "more_data": _artifact(rng.gamma(SHAPE, SCALE, 20_000)),
        "biased": _artifact(biased_train),
        "exponential": _artifact(rng.gamma(SHAPE, SCALE, 5000), "exponential"),
    }
    ll = {k: heldout_loglik(m, test) for k, m in models.items()}
    calib = {k: calibration(m, test) for k, m in models.items()}
    return test, models, ll, calib


# --- evaluation ---------------------------------------------------------------------------
def test_heldout_loglik_matches_scipy(gamma_world):
    test, models, ll, _ = gamma_world
    m = models["champion"]
    ref = stats.gamma.logpdf(test, m.params["shape"], scale=m.params["scale"])
    assert ll["champion"].shape == (N_TEST,)
    np.testing.assert_allclose(ll["champion"], ref, rtol=1e-10)


def test_well_specified_gamma_is_calibrated(gamma_world):
    test, _, _, calib = gamma_world
    c = calib["more_data"]
    assert set(c) == set(CALIBRATION_KEYS)
    assert c["kind"] == "continuous" and c["family"] == "gamma"
    assert c["n"] == c["n_used"] == N_TEST
    # KS of a truly uniform sample of 20k is ~0.006; the 95% critical value is 0.0096
    assert c["ks"] < 0.012
    for level in (50, 80, 95):
        assert abs(c[f"coverage_{level}"] - level / 100) < 0.01
    assert c["coverage_error_max"] < 0.01
    assert sum(c["pit_hist"]) == N_TEST and len(c["pit_hist"]) == 10
    assert max(abs(h - N_TEST / 10) for h in c["pit_hist"]) < 5 * np.sqrt(N_TEST / 10)
    assert c["ece"] is None and c["brier"] is None and c["reliability"] is None
    # coverage is exactly the share of rows inside the model's central interval
    lo, hi = gamma_world[1]["more_data"].ppf(np.array([0.1, 0.9]))
    assert c["coverage_80"] == pytest.approx(np.mean((test >= lo) & (test <= hi)), abs=1e-4)
    json.dumps(c, allow_nan=False)


def test_censored_rows_get_a_randomized_pit_that_stays_uniform():
    """30% administratively censored: a correct model stays calibrated (dropping censored rows
    would skew the PIT; the old behaviour showed KS ~0.3 here), a wrong one does not."""
    rng = np.random.default_rng(5)
    t = rng.weibull(1.4, 20000) * 0.35
    c = np.quantile(t, 0.7)
    x, event = np.minimum(t, c), (t <= c).astype(float)
    good = ModelArtifact.from_fit(mleops.fit(x, "weibull", event=event))
    cal = calibration(good, x, event=event)
    assert cal["n_used"] == cal["n"] == 20000
    assert cal["ks"] < 0.015 and cal["coverage_error_max"] < 0.015
    naive = ModelArtifact.from_fit(mleops.fit(x, "weibull"))  # ignores censoring
    assert calibration(naive, x, event=event)["ks"] > 0.05


def test_summary_metrics_are_flat_numbers(gamma_world):
    _, _, ll, calib = gamma_world
    m = summary_metrics(ll["more_data"], calib["more_data"])
    assert m["heldout_avg_loglik"] == pytest.approx(ll["more_data"].mean())
    assert m["ks"] == calib["more_data"]["ks"]
    assert {"coverage_50", "coverage_80", "coverage_95", "heldout_n"} <= set(m)
    assert "ece" not in m and "pit_hist" not in m and "kind" not in m
    assert all(isinstance(v, float) for v in m.values())


def test_randomized_pit_for_poisson_is_uniform():
    rng = np.random.default_rng(7)
    art = _artifact(rng.poisson(3.2, 2000), "poisson")
    art.params["mu"] = 3.2  # evaluate the true model: only the PIT construction is on trial
    y = rng.poisson(3.2, N_TEST).astype(float)
    c = calibration(art, y, seed=1)
    assert c["kind"] == "count"
    assert c["ks"] < 0.012 and c["coverage_error_max"] < 0.01
    # the plain (non-randomized) PIT of a count model is far from uniform
    assert stats.kstest(art.cdf(y), "uniform").statistic > 0.05
    assert calibration(art, y, seed=1) == c  # seeded
    assert calibration(art, y, seed=2)["ks"] != c["ks"]


@pytest.mark.slow
def test_logistic_ece_small_for_truth_large_for_shifted_intercept():
    rng = np.random.default_rng(11)
    beta = np.array([-0.5, 1.2])

    def draw(n):
        X = np.column_stack([np.ones(n), rng.normal(size=n)])
        return (rng.uniform(size=n) < 1 / (1 + np.exp(-X @ beta))).astype(float), X

    y, X = draw(N_TEST)
    art = _artifact(y, "logistic", X=X, features=["const", "x1"])
    yt, Xt = draw(N_TEST)
    c = calibration(art, yt, X=Xt)
    assert c["kind"] == "binary"
    assert c["ks"] is None and c["coverage_95"] is None and c["pit_hist"] is None
    assert c["ece"] < 0.02
    p = 1 / (1 + np.exp(-Xt @ art.values))
    assert c["brier"] == pytest.approx(np.mean((p - yt) ** 2), rel=1e-9)
    assert sum(r["count"] for r in c["reliability"]) == N_TEST
    shifted = ModelArtifact.from_json(art.to_json())
    shifted.params["const"] += 1.0
    cs = calibration(shifted, yt, X=Xt)
    assert cs["ece"] > 0.1
    assert decide(heldout_loglik(art, yt, X=Xt), None, c).passed
    bad = decide(heldout_loglik(shifted, yt, X=Xt), heldout_loglik(art, yt, X=Xt), cs)
    assert not bad.passed and not bad.stats["calibration_passed"]
    assert any("ECE" in r and "FAILS" in r for r in bad.reasons)


# --- gate ---------------------------------------------------------------------------------
@pytest.mark.parametrize("test", ["z", "bootstrap"])
def test_biased_collector_candidate_is_rejected(gamma_world, test):
    _, _, ll, calib = gamma_world
    cfg = GateConfig(test=test, tolerance=MARGIN)
    d = decide(ll["biased"], ll["champion"], calib["biased"], cfg)
    assert not d.passed
    assert not d.stats["likelihood_passed"]
    assert d.stats["mean_diff"] < -0.01  # far worse than the margin, not a close call
    assert d.stats["lower_bound"] < -MARGIN
    assert d.stats["p_value"] > 0.5
    assert d.stats["test"] == test
    assert "likelihood FAILS" in d.reasons[0]


@pytest.mark.parametrize("test", ["z", "bootstrap"])
def test_candidate_with_more_true_data_passes(gamma_world, test):
    _, _, ll, calib = gamma_world
    d = decide(ll["more_data"], ll["champion"], calib["more_data"],
               GateConfig(test=test, tolerance=MARGIN))
    assert d.passed, d.reasons
    diff = ll["more_data"] - ll["champion"]
    assert d.stats["n"] == N_TEST
    assert d.stats["mean_diff"] == pytest.approx(diff.mean())
    assert d.stats["sd_diff"] == pytest.approx(diff.std(ddof=1))
    assert d.stats["lower_bound"] >= -MARGIN
    assert d.stats["p_value"] < 0.05
    if test == "z":
        se = diff.std(ddof=1) / np.sqrt(N_TEST)
        assert d.stats["lower_bound"] == pytest.approx(diff.mean() - stats.norm.ppf(0.95) * se)
        assert d.stats["z"] == pytest.approx((diff.mean() + MARGIN) / se)
    else:  # the percentile bound agrees with the normal one on 20k rows
        se = diff.std(ddof=1) / np.sqrt(N_TEST)
        assert abs(d.stats["lower_bound"] - (diff.mean() - 1.645 * se)) < 0.3 * se
        again = decide(ll["more_data"], ll["champion"], calib["more_data"],
                       GateConfig(test=test, tolerance=MARGIN))
        assert again.stats == d.stats  # seeded
    json.dumps(d.to_dict(), allow_nan=False)


def test_paired_test_not_two_averages(gamma_world):
    """Pairing: the same held-out rows make a small, real improvement detectable."""
    _, _, ll, calib = gamma_world
    d = decide(ll["more_data"], ll["champion"], calib["more_data"], GateConfig())
    diff = ll["more_data"] - ll["champion"]
    unpaired_se = np.sqrt((ll["more_data"].var(ddof=1) + ll["champion"].var(ddof=1)) / N_TEST)
    assert d.stats["se"] < unpaired_se / 5
    assert d.stats["se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(N_TEST))


def test_exponential_candidate_rejected_when_truth_is_gamma(gamma_world):
    _, _, ll, calib = gamma_world
    d = decide(ll["exponential"], ll["champion"], calib["exponential"], GateConfig(tolerance=MARGIN))
    assert not d.passed
    assert not d.stats["likelihood_passed"] and not d.stats["calibration_passed"]
    assert d.stats["ks"] > 0.1


def test_first_model_gated_on_calibration_alone(gamma_world):
    _, _, ll, calib = gamma_world
    ok = decide(ll["more_data"], None, calib["more_data"])
    assert ok.passed and ok.stats["has_champion"] is False
    assert "first model" in ok.reasons[0] and "calibration alone" in ok.reasons[0]
    assert ok.stats["lower_bound"] is None and ok.stats["mean_diff"] is None
    bad = decide(ll["exponential"], None, calib["exponential"])
    assert not bad.passed and bad.stats["likelihood_passed"]
    assert sum("calibration FAILS" in r for r in bad.reasons) == 2
    assert set(ok.stats) == set(decide(ll["more_data"], ll["champion"], calib["more_data"]).stats)


def test_identical_models_pass_with_zero_tolerance(gamma_world):
    _, _, ll, calib = gamma_world
    for test in ("z", "bootstrap"):
        d = decide(ll["champion"], ll["champion"].copy(), calib["champion"], GateConfig(test=test))
        assert d.stats["likelihood_passed"] and d.stats["lower_bound"] == 0.0


def test_bad_inputs_raise_value_error(gamma_world):
    _, _, ll, calib = gamma_world
    c = calib["champion"]
    with pytest.raises(ValueError, match="same held-out rows"):
        decide(ll["champion"], ll["champion"][:-1], c)
    nan = ll["champion"].copy()
    nan[5] = np.nan
    with pytest.raises(ValueError, match=r"candidate_ll: 1 non-finite .* row 5"):
        decide(nan, ll["champion"], c)
    inf = ll["champion"].copy()
    inf[3] = -np.inf
    with pytest.raises(ValueError, match=r"champion_ll: .*row 3.*zero probability"):
        decide(ll["champion"], inf, c)
    with pytest.raises(ValueError, match="unknown kind"):
        decide(ll["champion"], None, {"kind": "ordinal"})
    with pytest.raises(ValueError, match="'ks'"):
        decide(ll["champion"], None, {**c, "ks": float("nan")})
    for bad in ({"confidence": 1.0}, {"tolerance": -0.1}, {"test": "t"}, {"n_boot": 10},
                {"ks_max": 0.0}, {"tolerance": float("nan")}, {"seed": 1.5}):
        with pytest.raises(ValueError, match="GateConfig"):
            GateConfig(**bad)


# --- report -------------------------------------------------------------------------------
def test_write_report_png_and_html(gamma_world, tmp_path):
    _, _, ll, calib = gamma_world
    d = decide(ll["biased"], ll["champion"], calib["biased"], GateConfig(tolerance=MARGIN))
    paths = write_report(calib["biased"], d, str(tmp_path / "r"), title="gamma <candidate>")
    png = open(paths["pit_png"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    doc = open(paths["report_html"], encoding="utf-8").read()
    assert "REJECTED" in doc and "likelihood FAILS" in doc
    assert "gamma &lt;candidate&gt;" in doc and "<candidate>" not in doc
    assert "data:image/png;base64," in doc and "lower_bound" in doc and "coverage_95" in doc
    assert isinstance(d, GateDecision)


def test_write_report_reliability_diagram(tmp_path):
    calib = {"kind": "binary", "family": "logistic", "n": 100, "n_used": 100, "ece": 0.03,
             "brier": 0.2, "reliability": [
                 {"lo": 0.1, "hi": 0.2, "mean_pred": 0.15, "obs_freq": 0.2, "count": 60},
                 {"lo": 0.7, "hi": 0.8, "mean_pred": 0.75, "obs_freq": 0.7, "count": 40}]}
    paths = write_report(calib, None, str(tmp_path), title="logit")
    assert open(paths["pit_png"], "rb").read(4) == b"\x89PNG"
    doc = open(paths["report_html"], encoding="utf-8").read()
    assert "Reliability table" in doc and "reliability diagram" in doc


def test_calibration_allows_for_sampling_noise_at_small_n():
    """400 held-out rows of a correctly specified model: the bare KS limit 0.05 rejected about
    a quarter of them; with the DKW allowance the gate's stated confidence holds. A clearly
    wrong model (PIT from the wrong shape) still fails at that n."""
    from mleops.gate.calibration import pit_summary as _pit_summary

    rng = np.random.default_rng(5)
    ll = np.zeros(400)
    passed = [decide(ll, None, {"kind": "continuous", "n": 400,
                                **_pit_summary(rng.uniform(size=400))}).passed
              for _ in range(300)]
    assert np.mean(passed) >= 0.95
    wrong = rng.uniform(size=400) ** 1.6  # PIT piled up near 0: a too-heavy right tail
    d = decide(ll, None, {"kind": "continuous", "n": 400, **_pit_summary(wrong)})
    assert not d.passed and "n=400" in d.reasons[1]


# --- three outcomes, and what estimation noise may and may not do -----------------------------
GOOD_CALIB = {"kind": "continuous", "n": 2000, "ks": 0.01, "coverage_50": 0.5,
              "coverage_80": 0.8, "coverage_95": 0.95, "coverage_error_max": 0.0}


@pytest.mark.parametrize("shift, outcome, passed", [
    (0.0, "passed", True),  # bounds within the margin: not worse
    (-0.0025, "inconclusive", True),  # the interval straddles -tolerance: registered
    (-0.05, "rejected", False),  # the rows show it is worse
])
def test_likelihood_has_three_outcomes(rng, shift, outcome, passed):
    champ = rng.normal(-1.0, 0.8, 2000)
    d = rng.normal(0.0, 0.05, 2000)
    cand = champ + d - d.mean() + shift  # mean difference exactly `shift`
    dec = decide(cand, champ, GOOD_CALIB, GateConfig())
    assert (dec.outcome, dec.passed) == (outcome, passed)
    assert dec.stats["lower_bound"] < dec.stats["mean_diff"] < dec.stats["upper_bound"]
    strict = decide(cand, champ, GOOD_CALIB, GateConfig(on_inconclusive="reject"))
    assert strict.passed == (outcome == "passed")
    with pytest.raises(ValueError, match="on_inconclusive"):
        GateConfig(on_inconclusive="maybe")


def test_one_default_tolerance_everywhere():
    from mleops._config import GATE_TOLERANCE
    from mleops.cli.main import main
    from mleops.pipeline import RunRequest
    from mleops_pipelines.training import training_pipeline

    run = main.get_command(None, "pipeline").commands["run"]
    cli_default = next(p.default for p in run.params if p.name == "gate_tolerance")
    ir_default = training_pipeline.pipeline_spec.root.input_definitions.parameters[
        "gate_tolerance"].default_value.number_value
    assert GateConfig().tolerance == RunRequest("d", "gamma", "m").gate_tolerance == \
        cli_default == ir_default == GATE_TOLERANCE


def test_one_inconclusive_policy_everywhere_and_wired_to_the_gate_task():
    """``--gate-on-inconclusive`` reaches the gate component of the compiled pipeline."""
    from mleops._config import INCONCLUSIVE_POLICIES
    from mleops.cli.main import main
    from mleops.pipeline import RunRequest
    from mleops_pipelines.training import training_pipeline

    run = main.get_command(None, "pipeline").commands["run"]
    opt = next(p for p in run.params if p.name == "gate_on_inconclusive")
    spec = training_pipeline.pipeline_spec
    ir_default = spec.root.input_definitions.parameters[
        "gate_on_inconclusive"].default_value.string_value
    assert list(opt.type.choices) == list(INCONCLUSIVE_POLICIES)
    assert GateConfig().on_inconclusive == RunRequest("d", "gamma", "m").gate_on_inconclusive \
        == opt.default == ir_default == "register"
    gate_task = spec.root.dag.tasks["gate"]
    assert gate_task.inputs.parameters["on_inconclusive"].component_input_parameter == \
        "gate_on_inconclusive"


def _lognormal_world(rng, n_train=3000, n_heldout=2000, worse=0.0):
    """Champion and candidate: lognormal MLEs from independent training sets; ``worse``
    nats/row of expected held-out loss are added to the candidate (a shifted location)."""
    truth_mu, truth_s = 0.0, 0.6
    held = np.exp(rng.normal(truth_mu, truth_s, n_heldout))
    fits = []
    for _ in range(2):
        logs = rng.normal(truth_mu, truth_s, n_train)
        fits.append((logs.mean(), logs.std()))
    (mu_c, s_c), (mu_p, s_p) = fits
    mu_c += truth_s * np.sqrt(2 * worse)  # E[loss] = delta^2 / (2 s^2)
    ll = lambda mu, s: stats.lognorm(s, scale=np.exp(mu)).logpdf(held)  # noqa: E731
    return ll(mu_c, s_c), ll(mu_p, s_p)


def test_an_equally_good_retrain_passes_and_a_worse_one_fails(rng):
    """Issue 12's gate targets at 3,000 training and 2,000 held-out rows: an equally good
    retrain is registered (passed or inconclusive) >= 99% of the time, a candidate worse by
    0.02 nats/row is rejected >= 99%."""
    equal = [decide(*_lognormal_world(rng), GOOD_CALIB).passed for _ in range(300)]
    worse = [decide(*_lognormal_world(rng, worse=0.02), GOOD_CALIB).passed for _ in range(300)]
    assert np.mean(equal) >= 0.99 and np.mean(worse) <= 0.01
