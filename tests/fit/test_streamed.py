"""Streamed fits (batches of bounded size, pass by pass) equal the in-memory fit; in a
multi-process job each process reads only its share of the pieces."""

import json
import os
import socket
import subprocess
import sys
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mleops
from mleops.batches import Piece, batch_rows, parse_size, scan, share
from mleops.columns import fit_table
from mleops.errors import DataError

MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")


def write_dir(path, cols: dict, files: int = 4, row_group: int = 7_000):
    """``cols`` split over ``files`` Parquet files of uneven row groups."""
    path.mkdir()
    n = len(next(iter(cols.values())))
    cuts = np.linspace(0, n, files + 1).astype(int)
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        pq.write_table(pa.table({k: v[a:b] for k, v in cols.items()}),
                       path / f"part-{i}.parquet", row_group_size=row_group)
    return str(path)


def assert_same_fit(a, b, rtol=1e-9):
    for name in b.params:
        assert a.params[name] == pytest.approx(b.params[name], rel=rtol), name
        assert a.se[name] == pytest.approx(b.se[name], rel=1e-6), name  # AD vs analytic H
    assert a.loglik == pytest.approx(b.loglik, rel=1e-12)
    assert a.converged and b.converged and a.n_obs == b.n_obs


rng = np.random.default_rng(11)
N = 60_000
T = rng.weibull(1.4, N) * 3.0
EVENT = (rng.random(N) < 0.75).astype(float)
AGE = rng.normal(size=N) * 1e4 + 5e4  # badly scaled on purpose: the design pass standardises
VISITS = rng.poisson(np.exp(0.2 + 0.4 * (AGE - 5e4) / 1e4)).astype(float)
COUNTS = rng.binomial(6, 0.4, N).astype(float)  # under-dispersed: the NB MLE is at the limit


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dir(tmp_path_factory.mktemp("ds") / "events",
                     {"t": T, "e": EVENT, "age": AGE, "visits": VISITS, "counts": COUNTS})


CASES = [  # (family, fit_table options, in-memory fit); the GLM's intercept on a covariate
    # around 5e4 is ill-conditioned on the user's scale: agreement there is 1e-8 (6e-9 seen)
    ("weibull", dict(column="t", censor_column="e"), lambda: mleops.fit(T, "weibull",
                                                                         event=EVENT)),
    ("lognormal", dict(column="t"), lambda: mleops.fit(T, "lognormal")),
    ("lognormal-censored", dict(column="t", censor_column="e"), lambda: mleops.fit(
        T, "lognormal", event=EVENT)),
    ("gamma", dict(column="t"), lambda: mleops.fit(T, "gamma")),
    ("poisson_glm", dict(column="visits", covariates="age"), lambda: mleops.fit(
        VISITS, "poisson_glm", X=np.column_stack([np.ones(N), AGE]), features=["const", "age"])),
]


@pytest.mark.slow
@pytest.mark.parametrize("family,options,in_memory", CASES, ids=[c[0] for c in CASES])
def test_streamed_equals_in_memory(data, family, options, in_memory):
    got = fit_table(data, family.split("-")[0], max_memory=parse_size("1MB"), **options)
    assert got.extra["streamed"] and got.extra["batch_rows"] <= N / 2.5  # really in batches
    assert_same_fit(got, in_memory(), rtol=1e-8 if family == "poisson_glm" else 1e-9)


@pytest.mark.slow
def test_a_boundary_mle_is_reported_with_its_streamed_limit(tmp_path):
    counts = COUNTS[:8000]
    small = write_dir(tmp_path / "counts", {"counts": counts}, files=2, row_group=1500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = fit_table(small, "nbinom", column="counts", max_memory=parse_size("0.1MB"))
        ref = mleops.fit(counts, "nbinom")
    assert got.extra["batch_rows"] < 4000
    assert got.boundary and "poisson limit" in got.boundary and not got.converged
    assert got.limit["family"] == "poisson"
    assert got.loglik == pytest.approx(ref.loglik, rel=1e-12)  # the limit's: the supremum


@pytest.mark.slow
def test_separation_beyond_the_first_batch_is_found_over_every_row(tmp_path):
    """A covariate set only on the last 300 rows, all of them events: quasi-complete
    separation that the first batch (the start) cannot show. The check's row counts ride
    along with the solver's passes, so the streamed fit says what the in-memory one does."""
    r = np.random.default_rng(5)
    z = r.normal(size=8000)
    flag = (np.arange(8000) >= 7700).astype(float)
    y = np.where(flag == 1, 1.0, (r.random(8000) < 1 / (1 + np.exp(-0.5 * z))).astype(float))
    path = write_dir(tmp_path / "sep", {"y": y, "z": z, "flag": flag}, files=2, row_group=1500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = fit_table(path, "logistic", column="y", covariates="z,flag",
                        max_memory=parse_size("0.3MB"))
        ref = mleops.fit(y, "logistic", X=np.column_stack([np.ones(8000), z, flag]),
                         features=["const", "z", "flag"])
    assert got.extra["streamed"] and got.extra["batch_rows"] < 7700
    assert "quasi-complete separation (300 of 8000 rows" in ref.boundary, ref.boundary
    assert got.boundary == ref.boundary and not got.converged


def test_pieces_are_shared_once_each_and_balanced():
    pieces = tuple(Piece(f"f{i}", g, rows) for i, rows in enumerate([5, 300, 7, 120, 120, 1, 60])
                   for g in range(2))
    for size in (1, 2, 3, 4, 5):
        shares = [share(pieces, r, size) for r in range(size)]
        assert [p for s in shares for p in s] == list(pieces)  # each once, in order
        assert shares == [share(pieces, r, size) for r in range(size)]  # deterministic
        if size <= 3:
            rows = [sum(p.rows for p in s) for s in shares]
            assert max(rows) - min(rows) <= 2 * 300, rows
    with pytest.raises(DataError, match="rank out of range"):
        share(pieces, 2, 2)


def test_scan_lists_row_groups_and_batches_cover_every_row(data):
    s = scan(data)
    assert s.rows == N and len(s.pieces) == 4 * 3 and s.columns[:2] == ("t", "e")
    from mleops.batches import batches

    got = np.concatenate([b["t"] for b in batches(s, s.pieces, ["t"], 10_000)])
    np.testing.assert_array_equal(got, T)
    assert {len(b["t"]) for b in list(batches(s, s.pieces, ["t"], 10_000))[:-1]} == {10_000}


def test_sizes_and_bad_values_are_one_line_errors(tmp_path, data):
    assert parse_size("512MB") == 512 * 10 ** 6 and parse_size("1GiB") == 1 << 30
    for bad in ("lots", "-1GB", "5 parsecs"):
        with pytest.raises(DataError, match="not a size"):
            parse_size(bad)
    with pytest.raises(DataError, match="holds only"):
        batch_rows(10_000, 2)
    x = T.copy()
    x[-5] = np.nan  # in the last file
    bad = write_dir(tmp_path / "bad", {"t": x})
    with pytest.raises(DataError, match="non-finite"):
        fit_table(bad, "weibull", column="t", max_memory=parse_size("1MB"))
    nulls = tmp_path / "nulls"
    nulls.mkdir()
    pq.write_table(pa.table({"t": pa.array([1.0, None, 2.0])}), nulls / "a.parquet")
    with pytest.raises(DataError, match="1 missing value"):
        fit_table(str(nulls), "weibull", column="t", max_memory=parse_size("1MB"))
    with pytest.raises(DataError, match="several starts in memory"):
        fit_table(data, "gaussian_mixture", column="t", k=2, max_memory=parse_size("1MB"))
    with pytest.raises(DataError, match="column.*'nope'.*not in"):
        fit_table(data, "weibull", column="nope", max_memory=parse_size("1MB"))
    const = write_dir(tmp_path / "const", {"t": np.full(5000, 2.5)}, files=2)
    with pytest.raises(DataError, match="all 5000 values equal 2.5"):
        fit_table(const, "weibull", column="t", max_memory=parse_size("1MB"))


@pytest.mark.slow
def test_the_cli_streams_with_max_memory(data):
    args = [MLEOPS, "fit", data, "--family", "weibull", "--column", "t", "--censor-column",
            "e", "--json"]
    streamed = subprocess.run([*args, "--max-memory", "1MB"], capture_output=True, text=True,
                              timeout=120)
    assert streamed.returncode == 0, streamed.stderr
    got = json.loads(streamed.stdout)
    assert got["streamed"] and got["rows_per_process"] == [N]
    ref = mleops.fit(T, "weibull", event=EVENT)
    for name, value in ref.params.items():
        assert got["params"][name] == pytest.approx(value, rel=1e-9)
    bad = subprocess.run([*args, "--max-memory", "lots"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "not a size like 512MB" in bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
def test_each_process_streams_only_its_share(data, processes):
    port, procs = _free_port(), []
    for rank in range(processes):  # what a JAXJob gives each pod
        env = {**os.environ, "COORDINATOR_ADDRESS": "127.0.0.1", "COORDINATOR_PORT": str(port),
               "NUM_PROCESSES": str(processes), "PROCESS_ID": str(rank),
               "JAX_PLATFORMS": "cpu", "MLEOPS_JAX_CACHE": "off"}
        procs.append(subprocess.Popen(
            [MLEOPS, "fit", data, "--family", "weibull", "--column", "t", "--censor-column",
             "e", "--distributed", "--max-memory", "1MB"], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    got = json.loads(outs[0][0][outs[0][0].index("{"):])
    rows = got["rows_per_process"]
    assert len(rows) == processes and sum(rows) == N and min(rows) > 0, rows
    single = fit_table(data, "weibull", column="t", censor_column="e",
                       max_memory=parse_size("1MB"))
    for name, value in single.params.items():
        assert got["params"][name] == pytest.approx(value, rel=1e-9)
        assert got["se"][name] == pytest.approx(single.se[name], rel=1e-8)
