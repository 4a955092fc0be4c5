"""The pipeline's train step streams a training table too large for its memory: the same
model artifact (parameters, standard errors, training-row sketch) as the in-memory step."""

import numpy as np
import pytest

from mleops.artifact import ModelArtifact
from mleops.errors import DataError
from mleops.pipeline import steps
from mleops.pipeline.dataset import ColumnSpec, read_dataset
from mleops.pipeline.overlap import K, Sketcher, sketch


def ingested(tmp_path, name, header, rows, family, spec):
    src = tmp_path / f"{name}.csv"
    src.write_text(header + "\n" + "".join(",".join(f"{v:.12g}" for v in r) + "\n"
                                           for r in rows))
    path = str(tmp_path / f"{name}.parquet")
    steps.ingest(str(src), path, family=family, spec=spec)
    return path


def both(tmp_path, path, family, **options):
    whole = steps.train(path, str(tmp_path / "m-memory"), family=family, **options)
    streamed = steps.train(path, str(tmp_path / "m-streamed"), family=family,
                           max_memory=200_000, **options)
    return whole, streamed


def assert_same_artifact(a: ModelArtifact, b: ModelArtifact):
    assert b.metadata["streamed"]["batch_rows"] < b.n_obs  # more than one batch
    assert "streamed" not in a.metadata
    for name, v in a.params.items():
        assert b.params[name] == pytest.approx(v, rel=1e-9), name
    assert np.allclose(b.cov, a.cov, rtol=1e-6, atol=0)
    assert b.loglik == pytest.approx(a.loglik, rel=1e-12)
    assert (b.n_obs, b.converged, b.metadata["n_train"]) == (a.n_obs, a.converged,
                                                             a.metadata["n_train"])
    sa, sb = a.metadata["train_rows_sketch"], b.metadata["train_rows_sketch"]
    assert (sb["hashes"], sb["n_rows"], sb["k"]) == (sa["hashes"], sa["n_rows"], sa["k"])
    assert sb["n_distinct"] == pytest.approx(sa["n_distinct"], rel=0.1)  # estimated past K
    assert b.metadata["data_hash"] == a.metadata["data_hash"]


def test_censored_weighted_weibull_streams_to_the_in_memory_artifact(tmp_path):
    rng = np.random.default_rng(11)
    n = 12_000
    x = rng.weibull(1.4, n) * 3.0
    rows = np.column_stack([np.minimum(x, 4.0), (x < 4.0).astype(float),
                            rng.integers(1, 4, n).astype(float)])
    path = ingested(tmp_path, "surv", "t,obs,w", rows, "weibull",
                    ColumnSpec.from_params("t", "obs", "w"))
    a, b = both(tmp_path, path, "weibull")
    assert_same_artifact(a, b)


@pytest.mark.slow
def test_a_glm_streams_on_the_users_scale(tmp_path):
    """Covariates travel as the table's cov: columns and come back under the user's names."""
    rng = np.random.default_rng(12)
    n = 9_000
    u = rng.uniform(0, 1e4, n)
    y = rng.poisson(np.exp(0.3 + 1e-4 * u))
    path = ingested(tmp_path, "glm", "y,u", np.column_stack([y, u]), "poisson_glm",
                    ColumnSpec.from_params("y", "", "", "u"))
    a, b = both(tmp_path, path, "poisson_glm")
    assert set(b.params) == {"const", "u"}
    assert_same_artifact(a, b)


@pytest.mark.slow
def test_one_pass_families_and_the_limits(tmp_path):
    rng = np.random.default_rng(13)
    path = ingested(tmp_path, "lat", "latency", rng.lognormal(0.2, 0.7, (8_000, 1)),
                    "lognormal", ColumnSpec.from_params("latency"))
    assert_same_artifact(*both(tmp_path, path, "lognormal"))
    with pytest.raises(DataError, match="holds only"):  # too small a budget: one clear line
        steps.train(path, str(tmp_path / "m-tiny"), family="lognormal", max_memory=1_000)
    with pytest.raises(DataError, match="--train-max-memory -1"):
        steps.train(path, str(tmp_path / "m-neg"), family="lognormal", max_memory=-1)
    # a mixture needs every row at once: it is fitted in memory whatever the budget
    m = steps.train(path, str(tmp_path / "m-mix"), family="gaussian_mixture", k=2,
                    max_memory=200_000)
    assert "streamed" not in m.metadata


def test_a_streamed_sketch_keeps_the_same_hashes_and_estimates_the_distinct_count(tmp_path):
    rng = np.random.default_rng(14)
    t = read_dataset(ingested(tmp_path, "many", "x", rng.gamma(2.0, 1.0, (5 * K, 1)),
                              "gamma", ColumnSpec.from_params("x")))
    s = Sketcher()
    for part in np.array_split(np.arange(t.n), 7):
        s.add(t.take(part))
    whole, got = sketch(t), s.result()
    assert got["hashes"] == whole["hashes"] and got["n_rows"] == t.n
    assert got["n_distinct_estimated"] and got["n_distinct"] == pytest.approx(5 * K, rel=0.1)
    few = Sketcher()
    few.add(t.take(np.arange(100)))
    assert few.result()["n_distinct"] == 100 and "n_distinct_estimated" not in few.result()


def test_a_streaming_budget_too_small_for_the_columns_fails_before_any_task(tmp_path):
    from mleops.pipeline import RunRequest

    src = tmp_path / "d.csv"
    src.write_text("t,obs\n" + "".join(f"{1 + i % 7},{i % 2}\n" for i in range(200)))
    base = {"data_uri": str(src), "family": "weibull", "model_name": "m", "column": "t",
            "censor_column": "obs"}
    with pytest.raises(DataError, match="--train-max-memory 50000 bytes holds only 520 rows"):
        RunRequest(**base, train_max_memory=50_000).validate()
    with pytest.raises(DataError, match="--train-max-memory -1"):
        RunRequest(**base, train_max_memory=-1).validate()
    RunRequest(**base, train_max_memory=10_000_000).validate()
