"""Fits agree with established libraries on real data sets (same parameterisation).

Criterion for scipy: our log-likelihood is equal or better to 1e-6 relative, evaluated by
scipy itself at our parameters (so a likelihood convention mismatch cannot hide).
"""

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, stats

import mleops


def nile():
    return sm.datasets.nile.load_pandas().data["volume"].to_numpy(float)


def engel_income():
    return sm.datasets.engel.load_pandas().data["income"].to_numpy(float)


def sunspots():
    return sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(float)


def mdvis():
    return sm.datasets.randhie.load_pandas().endog.to_numpy(float)


def _at_least_as_good(ours, ref):
    assert ours >= ref - 1e-6 * abs(ref), (ours, ref)


SCIPY_CASES = [
    ("normal", nile, lambda x: stats.norm(*stats.norm.fit(x)), lambda r: stats.norm(r["loc"], r["scale"])),
    ("lognormal", engel_income, lambda x: stats.lognorm(*stats.lognorm.fit(x, floc=0)),
     lambda r: stats.lognorm(r["shape"], scale=r["scale"])),
    ("exponential", nile, lambda x: stats.expon(*stats.expon.fit(x, floc=0)),
     lambda r: stats.expon(scale=r["scale"])),
    ("gamma", engel_income, lambda x: stats.gamma(*stats.gamma.fit(x, floc=0)),
     lambda r: stats.gamma(r["shape"], scale=r["scale"])),
    ("weibull", nile, lambda x: stats.weibull_min(*stats.weibull_min.fit(x, floc=0)),
     lambda r: stats.weibull_min(r["shape"], scale=r["scale"])),
    ("student_t", engel_income, lambda x: stats.t(*stats.t.fit(np.log(x))),
     lambda r: stats.t(r["df"], r["loc"], r["scale"])),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,data,scipy_fit,frozen", SCIPY_CASES, ids=[c[0] for c in SCIPY_CASES])
def test_matches_scipy_fit_on_real_data(name, data, scipy_fit, frozen):
    x = data()
    if name == "student_t":
        x = np.log(x)
        ref = stats.t(*stats.t.fit(x))
    else:
        ref = scipy_fit(x)
    r = mleops.fit(x, name)
    assert r.converged
    ours = frozen(r.params).logpdf(x).sum()
    np.testing.assert_allclose(r.loglik, ours, rtol=1e-10)  # our loglik is scipy's loglik
    _at_least_as_good(ours, ref.logpdf(x).sum())
    for v in r.se.values():
        assert np.isfinite(v) and v > 0


def test_genpareto_matches_scipy_peaks_over_threshold():
    x, u = sunspots(), 80.0
    r = mleops.fit(x, "genpareto", threshold=u)
    y = x[x > u] - u
    c, _, s = stats.genpareto.fit(y, floc=0)
    assert r.extra["n_exceedances"] == y.size
    ours = stats.genpareto(r.params["shape"], scale=r.params["scale"]).logpdf(y).sum()
    np.testing.assert_allclose(r.loglik, ours, rtol=1e-10)
    _at_least_as_good(ours, stats.genpareto(c, scale=s).logpdf(y).sum())


@pytest.mark.slow
def test_count_families_on_doctor_visits():
    y = mdvis()
    r = mleops.fit(y, "poisson")
    np.testing.assert_allclose(r.params["mu"], y.mean(), rtol=1e-12)
    np.testing.assert_allclose(r.loglik, stats.poisson(y.mean()).logpmf(y).sum(), rtol=1e-12)
    nb = mleops.fit(y, "negbinom")
    nll = lambda t: -stats.nbinom(np.exp(t[0]), 1 / (1 + np.exp(-t[1]))).logpmf(y).sum()
    best = optimize.minimize(nll, [0.0, 0.0], method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 4000})
    ours = stats.nbinom(nb.params["n"], nb.params["p"]).logpmf(y).sum()
    np.testing.assert_allclose(nb.loglik, ours, rtol=1e-10)
    _at_least_as_good(ours, -best.fun)
    assert nb.loglik > r.loglik + 1000  # visits are strongly over-dispersed


def _design(exog):
    X = np.column_stack([np.ones(len(exog)), exog.to_numpy(float)])
    return X, ["const", *exog.columns]


def test_logistic_matches_statsmodels_logit():
    d = sm.datasets.spector.load_pandas()
    X, names = _design(d.exog)
    y = d.endog.to_numpy(float)
    ref = sm.Logit(y, X).fit(disp=0)
    r = mleops.fit(y, "logistic", X=X, features=names)
    np.testing.assert_allclose(r.values, ref.params, rtol=1e-6)
    np.testing.assert_allclose(list(r.se.values()), ref.bse, rtol=1e-5)
    np.testing.assert_allclose(r.loglik, ref.llf, rtol=1e-10)


@pytest.mark.slow
def test_poisson_and_negbin_glm_match_statsmodels():
    d = sm.datasets.randhie.load_pandas()
    X, names = _design(d.exog)
    y = d.endog.to_numpy(float)
    ref = sm.Poisson(y, X).fit(disp=0)
    r = mleops.fit(y, "poisson_glm", X=X, features=names)
    np.testing.assert_allclose(r.values, ref.params, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(list(r.se.values()), ref.bse, rtol=1e-5)
    np.testing.assert_allclose(r.loglik, ref.llf, rtol=1e-10)
    # statsmodels default (bfgs) stops early; its Newton with a tight tol is the reference.
    ref = sm.NegativeBinomial(y, X, loglike_method="nb2").fit(disp=0, method="newton",
                                                              maxiter=200, tol=1e-12)
    r = mleops.fit(y, "negbin_glm", X=X, features=names)
    assert r.param_names[-1] == "alpha"
    np.testing.assert_allclose(r.values, ref.params, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(list(r.se.values()), ref.bse, rtol=1e-4)
    _at_least_as_good(r.loglik, ref.llf)


@pytest.mark.parametrize("dataset", ["waltons", "rossi"])
def test_censored_weibull_matches_lifelines(dataset):
    from lifelines import WeibullFitter
    from lifelines.datasets import load_rossi, load_waltons

    df = load_waltons() if dataset == "waltons" else load_rossi()
    T, E = (df["T"], df["E"]) if dataset == "waltons" else (df["week"], df["arrest"])
    ref = WeibullFitter().fit(T, E)
    r = mleops.fit(T.to_numpy(float), "weibull", event=E.to_numpy(float))
    assert r.converged
    np.testing.assert_allclose([r.params["shape"], r.params["scale"]], [ref.rho_, ref.lambda_],
                               rtol=1e-5)
    np.testing.assert_allclose(r.loglik, ref.log_likelihood_, rtol=1e-8)
    np.testing.assert_allclose([r.se["shape"], r.se["scale"]],
                               [ref.summary.loc["rho_", "se(coef)"], ref.summary.loc["lambda_", "se(coef)"]],
                               rtol=1e-3)


def _censored(rng, family, n=20000):
    t = {"weibull": lambda: 3.0 * rng.weibull(1.5, n), "lognormal": lambda: rng.lognormal(
        1.0, 0.7, n), "normal": lambda: rng.normal(5.0, 2.0, n)}[family]()
    c = np.quantile(t, 0.7)  # 30% censored at a timeout
    return np.minimum(t, c), (t <= c).astype(float)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["weibull", "lognormal", "normal"])
def test_right_censored_fast_kernels_equal_the_generic_likelihood(family):
    """The censored kernels (a few sums per Newton step) give the generic path's MLE, SEs and
    log-likelihood; the generic path is forced with a no-op truncation."""
    x, e = _censored(np.random.default_rng(5), family)
    fast = mleops.fit(x, family, event=e)
    generic = mleops.fit(x, family, event=e, truncation=(None, None))
    assert fast.converged and generic.converged
    np.testing.assert_allclose(fast.values, generic.values, rtol=1e-6)  # both at tol 1e-12
    np.testing.assert_allclose(list(fast.se.values()), list(generic.se.values()), rtol=1e-6)
    np.testing.assert_allclose(fast.loglik, generic.loglik, rtol=1e-12)


@pytest.mark.parametrize("family", ["weibull", "lognormal"])
def test_right_censored_fits_match_lifelines(family):
    from lifelines import LogNormalFitter, WeibullFitter

    x, e = _censored(np.random.default_rng(6), family)
    r = mleops.fit(x, family, event=e)
    ref = (WeibullFitter if family == "weibull" else LogNormalFitter)().fit(x, e)
    np.testing.assert_allclose(r.loglik, ref.log_likelihood_, rtol=1e-9)
    if family == "lognormal":
        np.testing.assert_allclose([r.params["shape"], np.log(r.params["scale"])],
                                   [ref.sigma_, ref.mu_], rtol=1e-4)  # lifelines stops early


def test_all_censored_has_no_mle():
    with pytest.raises(mleops.DataError, match="no observed events"):
        mleops.fit([1.0, 2.0, 3.0], "weibull", event=[0, 0, 0])


def test_the_censored_kernels_normal_log_sf_matches_scipy_far_into_both_tails():
    from mleops.fit.censored import log_sf

    z = np.linspace(-40, 60, 20001)
    np.testing.assert_allclose(np.asarray(log_sf(z)), stats.norm.logsf(z), rtol=1e-12, atol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["spread", "one timeout", "far tail"])
def test_the_censored_kernels_gather_the_censored_rows_wherever_they_lie(where):
    """The kernels gather the censored rows into a few static slots (at most n/16 spare) and
    switch to the tail series when some z passes 35: the same fit as the generic path with
    censored rows scattered, bunched at one timeout, or far beyond every event."""
    rng = np.random.default_rng(9)
    x = rng.normal(5.0, 2.0, 5000)
    e = (rng.random(5000) < 0.8).astype(float)
    if where == "one timeout":
        x = np.where(e == 1, np.minimum(x, 7.0), 7.0)
        e = np.where(x < 7.0, e, 0.0)
    if where == "far tail":
        x[:7], e[:7] = 5.0 + 2.0 * np.array([40, 45, 50, 60, 70, 80, 90]), 0.0
    fast = mleops.fit(x, "normal", event=e)
    generic = mleops.fit(x, "normal", event=e, truncation=(None, None))
    np.testing.assert_allclose(fast.values, generic.values, rtol=1e-7)
    np.testing.assert_allclose(fast.loglik, generic.loglik, rtol=1e-12)
    assert fast.converged and np.isfinite(list(fast.se.values())).all()


def test_censored_index_lists_every_censored_row_and_pads_with_an_event():
    """The host-side gather list: every censored position once, in order, padded to the
    static slot count with an event's position (weight 0 in the censored sums)."""
    from mleops.fit.censored import censored_index, censored_slots
    from mleops.fit.data import EXACT, RIGHT

    codes = np.full(1000, RIGHT)
    codes[[3, 500, 999]] = EXACT  # censored rows first: the pad is found past them
    idx = censored_index(codes)
    assert idx.dtype == np.int32 and idx.size == censored_slots(997, 1000) >= 997
    np.testing.assert_array_equal(idx[:997], np.flatnonzero(codes == RIGHT))
    assert (codes[idx[997:]] == EXACT).all()
    assert censored_index(np.full(5, EXACT)) is None


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gamma", "lognormal", "normal"])
def test_sums_read_in_place_equal_the_checked_path_at_every_alignment(family):
    """The exact-data fit of these families sums the caller's buffer where it lies (rows
    before the first 64-byte boundary in a padded block) and validates only when a sum is
    not finite: every offset gives the checked path's fit, and bad values its error."""
    x = np.random.default_rng(21).gamma(2.5, 1.3, 4099)
    ref = mleops.fit(x, family, truncation=(None, None))  # the general, checked path
    for k in range(9):
        r = mleops.fit(x[k:], family)
        assert r.converged and r.n_obs == x.size - k
        if k == 0:
            np.testing.assert_allclose(r.values, ref.values, rtol=1e-9)
            np.testing.assert_allclose(r.loglik, ref.loglik, rtol=1e-12)
    bad = x.copy()
    bad[5] = np.nan
    with pytest.raises(mleops.DataError, match="first at row 5"):
        mleops.fit(bad, family)
    if family != "normal":
        bad[5] = -1.0
        with pytest.raises(mleops.DataError, match="row 5"):
            mleops.fit(bad, family)
    with pytest.raises(mleops.DataError, match="all 10 values equal"):
        mleops.fit(np.full(10, 2.0), family)
