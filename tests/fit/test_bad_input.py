"""Bad input gets a precise DataError naming the problem - never a NaN result."""

import numpy as np
import pytest

import mleops
from mleops import DataError

CASES = [
    ([], "weibull", {}, "empty"),
    ([1.0, np.nan, 2.0], "gamma", {}, r"non-finite.*row 1"),
    ([1.0, np.inf], "normal", {}, "non-finite"),
    ([1.0, -2.0, 3.0], "gamma", {}, r"outside the support of gamma.*row 1"),
    ([0.0, 1.0], "weibull", {}, r"support of weibull \(values > 0\)"),
    ([1.5, 2.0], "poisson", {}, "non-negative integers"),
    (["a", "b"], "normal", {}, "expected numbers"),
    ([[1.0, 2.0], [3.0, 4.0]], "normal", {}, r"1-D column.*shape \(2, 2\)"),
    ([1.0, 2.0], "gamma", {"event": [1, 2]}, r"0 \(censored\) or 1 \(observed\).*row 1"),
    ([1.0, 2.0], "gamma", {"weights": [1.0]}, r"weights: expected shape \(2,\)"),
    ([1.0, 2.0], "gamma", {"weights": [1.0, -1.0]}, "must be >= 0"),
    ([1.0, 0.0], "logistic", {}, "needs covariates"),
    ([1.0, 2.0], "logistic", {"X": np.ones((2, 1))}, "must be 0 or 1"),
    ([1.0, 2.0], "gamma", {"X": np.ones((2, 1))}, "takes no covariates"),
    ([1.0, 2.0], "genpareto", {"threshold": 5.0}, "no values above the threshold"),
    ([1.0, 5.0], "normal", {"truncation": (0.0, 2.0)}, "outside its truncation bounds"),
    ([1.0, 2.0], "weibul", {}, "unknown family"),
]


@pytest.mark.parametrize("x,family,kw,match", CASES, ids=[c[3][:30] for c in CASES])
def test_precise_errors(x, family, kw, match):
    with pytest.raises(DataError, match=match):
        mleops.fit(x, family, **kw)


@pytest.mark.parametrize("family", ["normal", "lognormal", "gamma", "weibull", "student_t",
                                    "gaussian_mixture"])
def test_constant_data_is_one_clear_error_for_every_scale_family(family):
    """All-equal values have no MLE for a family with a scale and a shape: the same DataError
    for all of them (gamma used to return garbage, the t to claim convergence), never NaN."""
    with pytest.raises(DataError, match=f"all 50 values equal 3.0: the {family} MLE does not "
                                        "exist"):
        mleops.fit(np.full(50, 3.0), family)


def test_constant_data_is_fine_where_the_mle_exists():
    assert mleops.fit(np.full(50, 3.0), "exponential").params["scale"] == pytest.approx(3.0)
    assert mleops.fit(np.full(50, 3.0), "poisson").params["mu"] == pytest.approx(3.0)


@pytest.mark.slow
def test_non_convergence_is_reported():
    rng = np.random.default_rng(0)
    x = rng.standard_t(3, 500)
    with pytest.warns(mleops.ConvergenceWarning, match="did not converge in 1 iterations"):
        r = mleops.fit(x, "student_t", max_iter=1)
    assert not r.converged and "did not converge" in r.message
    assert r.to_dict()["converged"] is False


def test_fit_many_rejects_bad_series():
    with pytest.raises(DataError, match="series 1 must be a non-empty"):
        mleops.fit_many([[1.0, 2.0], []], "gamma")
    with pytest.raises(DataError, match="outside the support"):
        mleops.fit_many([[1.0, 2.0], [3.0, -1.0]], "gamma")
