"""fit_fleet: keyed fits equal per-key fits, in few padded shapes, with an honest status."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import mleops
from mleops import DataError, fit_fleet, fit_many
from mleops.fit import fleet as fleet_mod
from mleops.fit.batched import BatchFitResult

SITES = ("north", "south")


@pytest.fixture(scope="module")
def weibull_frame():
    """12 keys of 9..60 censored Weibull rows, one of 3 rows, one with no event; shuffled."""
    rng = np.random.default_rng(7)
    sizes = rng.integers(9, 61, 12)
    parts = []
    for i, n in enumerate([*sizes, 3, 20]):
        t, c = rng.weibull(1.3 + 0.05 * i, n) * (2 + i % 3), rng.uniform(1, 9, n)
        ev = (t <= c).astype(int) if i < 13 else np.zeros(n, int)
        parts.append(pd.DataFrame({"site": SITES[i % 2], "unit": i // 2, "id": f"k{i:02d}",
                                   "x": np.minimum(t, c), "e": ev}))
    return pd.concat(parts).sample(frac=1.0, random_state=3).reset_index(drop=True)


@pytest.fixture(scope="module")
def weibull_fleet(weibull_frame):
    return fit_fleet(weibull_frame, "weibull", key="id", column="x", event="e")


def _rows(df, key_col, key):
    sub = df[df[key_col] == key]
    return sub.x.to_numpy(), sub.e.to_numpy()


def test_weibull_censored_matches_per_key_fits(weibull_frame, weibull_fleet):
    f = weibull_fleet
    assert len(f) == 14 and list(f.keys) == sorted(weibull_frame.id.unique())
    fitted = [k for k in f.keys if f[k].message == "converged"]
    assert len(fitted) == 12
    series = [_rows(weibull_frame, "id", k) for k in fitted]
    ref = fit_many([s[0] for s in series], "weibull", event=[s[1] for s in series])
    np.testing.assert_allclose(f.params.loc[fitted].to_numpy(), ref.params, rtol=1e-6)
    np.testing.assert_allclose(f.se.loc[fitted].to_numpy(), ref.se, rtol=1e-6)
    np.testing.assert_allclose(f.loglik.loc[fitted].to_numpy(), ref.loglik, rtol=1e-6)
    assert f.n_obs.loc[fitted].tolist() == [len(s[0]) for s in series]
    for k in fitted[:2]:  # and the single fit
        x, e = _rows(weibull_frame, "id", k)
        one = mleops.fit(x, "weibull", event=e)
        np.testing.assert_allclose(list(f[k].params.values()), one.values, rtol=1e-6)
        assert f[k].loglik == pytest.approx(one.loglik, rel=1e-6)
        assert f[k].n_obs == one.n_obs and f[k].converged


def test_unfittable_keys_say_why_never_a_silent_nan(weibull_fleet):
    f = weibull_fleet
    assert f.status_counts() == {"converged": 12, "too few rows": 1, "no observed events": 1}
    few, dead = f["k12"], f["k13"]
    assert few.message == "too few rows" and few.n_obs == 3 and not few.converged
    assert math.isnan(few.params["shape"]) and dead.message == "no observed events"
    assert np.isnan(few.cov).all() and few.extra["key"] == "k12"
    nan_rows = f.params.isna().any(axis=1)
    assert set(f.status[nan_rows]) <= {"too few rows", "no observed events"}
    assert f.converged.sum() == 12
    t = f.to_table()
    assert t.column_names[:3] == ["id", "shape", "scale"]
    assert {"se_shape", "loglik", "n_obs", "converged", "status"} <= set(t.column_names)
    assert t.num_rows == 14 and t.column("status").to_pylist().count("converged") == 12
    with pytest.raises(KeyError, match="no key"):
        f["nope"]


def test_min_rows_is_the_callers(weibull_frame):
    f = fit_fleet(weibull_frame, "weibull", key="id", column="x", event="e", min_rows=25)
    sizes = weibull_frame.groupby("id").size()
    assert (f.status[sizes < 25] == "too few rows").all()
    assert f.params[sizes < 25].isna().all().all()


def test_composite_key_and_arrow_input(weibull_frame, weibull_fleet):
    f = fit_fleet(pa.Table.from_pandas(weibull_frame), "weibull", key=["site", "unit"],
                  column="x", event="e")
    assert f.keys.names == ["site", "unit"] and len(f) == 14
    assert f.keys[0] == ("north", 0)
    by_id = weibull_frame.drop_duplicates("id").set_index(["site", "unit"]).id
    for sk in [("north", 0), ("south", 5), ("north", 6)]:
        a, b = f[sk], weibull_fleet[by_id.loc[sk]]
        assert a.message == b.message and a.extra["key"] == sk
        np.testing.assert_allclose(list(a.params.values()), list(b.params.values()),
                                   rtol=1e-12)
    assert f.params.loc[("south", 5)].shape == (2,)
    assert f.to_table().column_names[:2] == ["site", "unit"]


def test_gamma_matches_per_key_fits():
    rng = np.random.default_rng(2)
    sizes = rng.integers(33, 65, 6)
    x = np.concatenate([rng.gamma(1.5 + i, 2.0, n) for i, n in enumerate(sizes)])
    k = np.repeat(np.arange(6) * 10, sizes)
    f = fit_fleet({"k": k, "x": x}, "gamma", key="k")  # the only other column is fitted
    ref = fit_many(np.split(x, np.cumsum(sizes)[:-1]), "gamma")
    assert list(f.keys) == [0, 10, 20, 30, 40, 50] and f.shapes == ((8, 64),)
    np.testing.assert_allclose(f.params.to_numpy(), ref.params, rtol=1e-6)
    np.testing.assert_allclose(f.loglik.to_numpy(), ref.loglik, rtol=1e-6)
    one = mleops.fit(x[k == 20], "gamma")
    np.testing.assert_allclose(f.params.loc[20].to_numpy(), one.values, rtol=1e-6)


def test_weights_and_the_boundary_as_a_single_fit_reports_them():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 200), rng.standard_t(3, 200)])
    k, w = np.repeat([0, 1], 200), rng.integers(0, 3, 400).astype(float)
    f = fit_fleet({"k": k, "x": np.abs(x) + 0.1, "w": w}, "gamma", key="k", weights="w")
    one = mleops.fit(np.abs(x[k == 1]) + 0.1, "gamma", weights=w[k == 1])
    np.testing.assert_allclose(f.params.loc[1].to_numpy(), one.values, rtol=1e-6)
    assert f[1].loglik == pytest.approx(one.loglik, rel=1e-9) and f[1].n_obs == 200
    t = fit_fleet({"k": k, "x": x}, "student_t", key="k")  # normal rows: at the limit
    assert t[0].message.startswith("boundary: the normal limit") and not t[0].converged
    assert t[1].message == "converged"
    with pytest.warns(mleops.ConvergenceWarning):
        ref = mleops.fit(x[k == 0], "student_t")
    assert ref.boundary and t[0].loglik == pytest.approx(ref.loglik, rel=1e-9)


def _fake_fit_many(calls, converged=None, nan_row=None):
    def fake(x, fam, *, weights, event, method, max_iter, tol):
        calls.append((x.shape, (weights > 0).sum(axis=1)))
        N = x.shape[0]
        p = np.ones((N, fam.n_params))
        conv = np.ones(N, bool) if converged is None else converged(N)
        if nan_row is not None:
            p[nan_row] = np.nan
        return BatchFitResult(fam.describe(), fam.param_names, p, p.copy(), -np.ones(N),
                              np.full(N, x.shape[1]), np.ones(N, int), np.zeros(N), conv,
                              method)
    return fake


def test_ragged_sizes_use_few_padded_shapes(monkeypatch):
    rng = np.random.default_rng(0)
    sizes = np.r_[5, 1500, rng.integers(5, 1501, 48)]
    calls = []
    monkeypatch.setattr(fleet_mod, "fit_many", _fake_fit_many(calls))
    f = fit_fleet({"key": np.repeat(np.arange(50), sizes), "x": rng.gamma(2.0, 1.0, sizes.sum())},
                  "gamma", key="key", column="x")
    lengths = {L for (_, L), _ in calls}
    assert len(lengths) <= math.log2(1500 / 5) + 1
    assert all(L & (L - 1) == 0 and N & (N - 1) == 0 for (N, L), _ in calls)
    for (_, L), real in calls:  # rows of weight > 0 in each padded series: a tight fit
        assert ((real <= L) & ((2 * real > L) | (L == fleet_mod.MIN_LENGTH))).all()
    assert set(sizes.tolist()) <= set(np.concatenate([w for _, w in calls]).tolist())
    assert f.shapes == tuple(s for s, _ in calls)
    assert f.n_obs.tolist() == sizes.tolist() and f.status_counts() == {"converged": 50}


def test_not_converged_and_failed_keys_are_flagged(monkeypatch):
    rng = np.random.default_rng(1)
    monkeypatch.setattr(fleet_mod, "fit_many", _fake_fit_many(
        [], converged=lambda N: np.arange(N) != 1, nan_row=2))
    f = fit_fleet({"key": np.repeat([1, 2, 3, 4], 20), "x": rng.gamma(2.0, 1.0, 80)},
                  "gamma", key="key", column="x")
    assert f[2].message == "not converged" and f[2].params["shape"] == 1.0
    assert f[3].message.startswith("failed") and math.isnan(f[3].params["shape"])
    assert f[1].message == f[4].message == "converged"


def test_bad_input_is_a_data_error():
    df = pd.DataFrame({"k": ["a", "b", None, "a"], "x": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(DataError, match="null key.*row 2"):
        fit_fleet(df, "gamma", key="k", column="x")
    with pytest.raises(DataError, match="null key"):
        fit_fleet(pa.Table.from_pandas(df), "gamma", key="k", column="x")
    with pytest.raises(DataError, match="key column 'site' not in the data"):
        fit_fleet(df, "gamma", key="site", column="x")
    with pytest.raises(DataError, match="value column 'y' not in"):
        fit_fleet(df, "gamma", key="k", column="y")
    with pytest.raises(DataError, match="no rows"):
        fit_fleet(df.iloc[:0], "gamma", key="k", column="x")
    with pytest.raises(DataError, match="truncation"):
        fit_fleet(df, "gamma", key="k", column="x", truncation=(0, 10))
    with pytest.raises(DataError, match="cannot be fitted in a batch"):
        fit_fleet(df, "gaussian_mixture", key="k", column="x", k=2)
    with pytest.raises(DataError, match="read a file first"):
        fit_fleet("data.csv", "gamma", key="k")
    ok = pd.DataFrame({"k": [1, 1, 2, 2], "x": [1.0, -2.0, 3.0, 4.0], "e": [1, 1, 0, 2]})
    with pytest.raises(DataError, match="row 1"):  # the table's row, before any grouping
        fit_fleet(ok, "gamma", key="k", column="x")
    with pytest.raises(DataError, match="event.*row 3"):
        fit_fleet(ok.assign(x=1.0 + ok.index), "weibull", key="k", column="x", event="e")


MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory):
    rng = np.random.default_rng(5)
    sizes = [40, 50, 60, 3]
    table = pa.table({"region": np.repeat(["eu", "eu", "us", "us"], sizes),
                      "shard": np.repeat([1, 2, 1, 2], sizes),
                      "latency": rng.gamma(2.0, 1.5, sum(sizes))})
    path = tmp_path_factory.mktemp("fleet") / "fleet.parquet"
    pq.write_table(table, path)
    return path, table


def test_cli_fleet_json(fleet_file):
    path, table = fleet_file
    out = subprocess.run([MLEOPS, "fit", str(path), "--family", "gamma", "--column",
                          "latency", "--key-column", "region", "--key-column", "shard",
                          "--json"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MLEOPS_JAX_CACHE": "off"})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["family"] == "gamma" and doc["keys"] == ["region", "shard"]
    assert doc["status_counts"] == {"converged": 3, "too few rows": 1}
    rows = {tuple(r["key"]): r for r in doc["rows"]}
    assert rows[("us", 2)]["status"] == "too few rows" and rows[("us", 2)]["params"]["shape"] is None
    x = table.column("latency").to_numpy()
    ref = mleops.fit(x[90:150], "gamma")
    np.testing.assert_allclose(list(rows[("us", 1)]["params"].values()), ref.values, rtol=1e-6)


def test_cli_fleet_summary_and_bad_input(fleet_file):
    from mleops.cli.main import main

    path, _ = fleet_file
    res = CliRunner().invoke(main, ["fit", str(path), "--family", "gamma", "--column",
                                    "latency", "--key-column", "region"])
    assert res.exit_code == 0, res.output
    assert "status: converged: 2" in res.output and "eu" in res.output
    bad = CliRunner().invoke(main, ["fit", str(path), "--family", "gamma", "--column",
                                    "latency", "--key-column", "zone"])
    assert bad.exit_code == 2 and "key column 'zone' not in the data" in bad.output
    bad = CliRunner().invoke(main, ["fit", str(path), "--family", "gamma", "--key-column",
                                    "region", "--covariates", "shard"])
    assert bad.exit_code == 2 and "--covariates cannot be combined" in bad.output


@pytest.mark.slow  # compiles the negative binomial's batched fit (~20 s)
def test_a_count_fleet_fits_each_keys_distinct_values_and_equals_fitting_it_alone():
    """Counts repeat: a count family's keys are fitted on their distinct values with summed
    weights (a fraction of the rows); estimates equal one fit per key, a Poisson-like key is
    reported on the boundary, and n_obs still counts every row."""
    rng = np.random.default_rng(8)
    sizes = {"a": (2.0, 0.2), "b": (0.7, 0.05), "c": (5.0, 0.5)}
    parts = [pd.DataFrame({"k": k, "x": rng.negative_binomial(n, p, 400).astype(float)})
             for k, (n, p) in sizes.items()]
    # under-dispersed counts (variance < mean): the negative binomial MLE is the Poisson limit
    parts.append(pd.DataFrame({"k": "poisson", "x": rng.binomial(20, 0.3, 400).astype(float)}))
    df = pd.concat(parts, ignore_index=True)
    fleet = mleops.fit_fleet(df, "negbinom", key="k", column="x")
    assert fleet.n_obs_array.tolist() == [400, 400, 400, 400]
    for k in sizes:
        alone = mleops.fit(df.x[df.k == k].to_numpy(), "negbinom")
        got = fleet[k]
        assert got.message == "converged" and got.converged and got.boundary == ""
        for name, v in alone.params.items():
            assert got.params[name] == pytest.approx(v, rel=1e-5)
        assert got.loglik == pytest.approx(alone.loglik, rel=1e-10)
        np.testing.assert_allclose(got.cov, alone.cov, rtol=1e-3)  # a FitResult, cov and all
        assert got.ci()["n"][0] < got.params["n"] < got.ci()["n"][1]
    poisson = fleet["poisson"]
    assert poisson.boundary.startswith("boundary: the poisson limit") and not poisson.converged
