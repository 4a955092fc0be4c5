"""Issue 15's defect classes: the engine is honest at the edges of the parameter space and
of the support, and badly scaled designs still converge. Each test failed on the code before."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import optimize, stats

import mleops
from mleops import DataError
from mleops.families import get_family
from mleops.fit.boundary import BoundaryWarning
from mleops.fit.data import make_data
from mleops.fit.likelihood import row_loglik


def quiet_fit(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mleops.fit(*args, **kw)


# --- 1. truncation at the lower end of a count support --------------------------------------
@pytest.mark.slow
def test_zero_truncated_poisson_is_the_zero_truncated_mle():
    y = np.random.default_rng(0).poisson(1.3, 4000)
    y = y[y > 0]
    r = mleops.fit(y, "poisson", truncation=(0, None))
    # the ZTP MLE solves mu / (1 - exp(-mu)) = mean(y)
    mle = optimize.brentq(lambda m: m / -np.expm1(-m) - y.mean(), 1e-6, 20)
    assert r.converged and r.params["mu"] == pytest.approx(mle, rel=1e-8)
    ll = np.sum(stats.poisson.logpmf(y, mle) - np.log(stats.poisson.sf(0, mle)))
    assert r.loglik == pytest.approx(ll, rel=1e-10)
    assert abs(r.params["mu"] - y.mean()) > 0.4  # not the plain mean any more


# --- 2. interval-censored counts are (x, upper] ---------------------------------------------
def test_interval_censored_counts_are_half_open_like_lifelines():
    fam = get_family("poisson")
    x, up = np.array([1.0, 0.0, 4.0]), np.array([3.0, 2.0, np.inf])
    d = make_data(fam, x, kind=np.array([3, 3, 3]), upper=up)
    ll = np.asarray(row_loglik(fam, np.array([2.0]), d))
    pois = stats.poisson(2.0)
    assert ll == pytest.approx(np.log([pois.cdf(3) - pois.cdf(1), pois.cdf(2) - pois.cdf(0),
                                       pois.sf(4)]), rel=1e-12)


# --- 3. an MLE on the boundary, or none, is reported as such --------------------------------
def test_negative_binomial_on_under_dispersed_counts_is_at_the_poisson_limit():
    y = np.random.default_rng(0).binomial(10, 0.3, 3000)
    with pytest.warns(BoundaryWarning, match="poisson limit"):
        r = mleops.fit(y, "negbinom")
    pois = mleops.fit(y, "poisson")
    assert not r.converged and "boundary" in r.boundary
    assert r.loglik == pois.loglik  # the supremum, not a round-off value above it
    assert r.limit["family"] == "poisson" and r.limit["lr_statistic"] == 0.0
    assert r.to_dict()["boundary"] == r.boundary


def test_an_over_dispersed_negative_binomial_is_an_ordinary_fit():
    y = stats.nbinom(3, 0.4).rvs(3000, random_state=1)
    r = mleops.fit(y, "negbinom")
    assert r.converged and not r.boundary
    assert r.limit["family"] == "poisson" and r.limit["lr_statistic"] > 100


@pytest.mark.parametrize("quasi", [False, True])
def test_separation_in_a_logistic_regression_has_no_finite_mle(quasi):
    x = np.random.default_rng(0).normal(size=200)
    y = (x > 0).astype(float)
    if quasi:  # ties at 0 carry both answers: the other rows are still separated
        x = np.concatenate([x, np.zeros(6)])
        y = np.concatenate([y, [0, 1, 0, 1, 0, 1]])
    X = np.column_stack([np.ones_like(x), x])
    r = quiet_fit(y, "logistic", X=X, features=["const", "x"])
    assert not r.converged
    assert ("quasi-complete" if quasi else "complete separation") in r.boundary


@pytest.mark.slow
def test_student_t_running_to_the_normal_limit_says_so():
    x = np.random.default_rng(0).normal(size=5000)
    r = quiet_fit(x, "student_t")
    normal = mleops.fit(x, "normal")
    assert r.boundary.startswith("MLE on the boundary, at the normal limit")
    assert not r.converged and r.loglik == normal.loglik


def test_a_heavy_tailed_t_is_interior():
    x = stats.t(4).rvs(5000, random_state=2)
    r = mleops.fit(x, "student_t")
    assert r.converged and not r.boundary and r.limit["lr_statistic"] > 50


def test_genpareto_below_shape_minus_one_has_no_mle():
    z = stats.genpareto(-1.5).rvs(2000, random_state=1)
    r = quiet_fit(z, "genpareto", threshold=0.0)
    assert not r.converged and "no maximum-likelihood estimate exists" in r.boundary


# --- 4. degenerate mixtures -----------------------------------------------------------------
def test_a_collapsed_mixture_component_is_degenerate():
    fam = get_family("gaussian_mixture", k=2)
    x = np.random.default_rng(0).normal(size=600)
    w = np.ones_like(x)
    spike = np.array([3 / 600, 1 - 3 / 600, 0.1, 0.0, 0.0016, 1.0])
    assert "collapsed" in fam.degenerate(spike, x, w)
    assert fam.degenerate(np.array([0.4, 0.6, -1.0, 1.0, 0.8, 0.9]), x, w) == ""


@pytest.mark.slow
def test_mixture_fits_never_report_a_spike_even_from_many_starts():
    """Two overlapping normals, 64 starts: the old code returned a component on ~3 points
    (weight 0.0055 of 600 rows, or scale 5e-4) as a converged MLE for most of these seeds."""
    for data_seed, seed in ((0, 0), (0, 1), (1, 0), (3, 2)):
        rng = np.random.default_rng(data_seed)
        x = np.concatenate([rng.normal(0, 1, 300), rng.normal(0.5, 1, 300)])
        r = quiet_fit(x, "gaussian_mixture", k=2, n_starts=64, seed=seed)
        scales = np.array([r.params["scale_0"], r.params["scale_1"]])
        weights = np.array([r.params["weight_0"], r.params["weight_1"]])
        assert (scales >= 0.01 * x.std()).all() and (weights * x.size >= 5).all(), r.params


# --- 6. badly scaled designs ----------------------------------------------------------------
def test_a_badly_scaled_poisson_glm_converges_to_the_statsmodels_optimum():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(0)
    u = rng.uniform(0.5e4, 1.5e4, 2000)
    X = np.column_stack([np.ones_like(u), u, u ** 2])
    y = rng.poisson(np.exp(0.5 + 1e-4 * u - 2e-9 * u ** 2))
    r = mleops.fit(y, "poisson_glm", X=X, features=["const", "u", "u2"])
    ref = sm.GLM(y, X, family=sm.families.Poisson()).fit(tol=1e-12)
    assert r.converged and r.iterations < 20
    assert r.values == pytest.approx(ref.params, rel=1e-6)
    assert np.array(list(r.se.values())) == pytest.approx(ref.bse, rel=1e-5)
    assert r.loglik == pytest.approx(ref.llf, rel=1e-10)


def test_a_logit_with_a_covariate_in_millions_reports_on_the_users_scale():
    rng = np.random.default_rng(1)
    z = rng.normal(size=3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-(0.3 + 0.8 * z)))).astype(float)
    small = mleops.fit(y, "logistic", X=np.column_stack([np.ones(3000), z]),
                       features=["const", "z"])
    big = mleops.fit(y, "logistic", X=np.column_stack([np.ones(3000), 1e6 * z]),
                     features=["const", "z"])
    assert big.converged and big.loglik == pytest.approx(small.loglik, rel=1e-10)
    assert big.params["z"] == pytest.approx(small.params["z"] / 1e6, rel=1e-7)
    assert big.se["z"] == pytest.approx(small.se["z"] / 1e6, rel=1e-6)
    assert big.params["const"] == pytest.approx(small.params["const"], rel=1e-7)


# --- 7. fit_many names the series -----------------------------------------------------------
@pytest.mark.parametrize("ragged", [True, False])
def test_fit_many_errors_name_the_series_and_its_row(ragged):
    rng = np.random.default_rng(0)
    bad = rng.gamma(2, 1, 26 if ragged else 50)
    bad[7] = -1.0
    data = [rng.gamma(2, 1, 50), rng.gamma(2, 1, 50), rng.gamma(2, 1, 50), bad]
    with pytest.raises(DataError, match=r"series 3, row 7: -1\.0"):
        mleops.fit_many(data if ragged else np.stack(data), "gamma")
