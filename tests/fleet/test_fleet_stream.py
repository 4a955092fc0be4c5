"""A fleet fitted from a Parquet dataset larger than its memory budget: partitioned by key
hash, fitted partition by partition, equal to the in-memory fit key for key."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mleops
from mleops.errors import DataError
from mleops.fleet_stream import BYTES_PER_ROW, fit_fleet_streamed, partitions_for


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(9)
    K, n = 60, 150
    df = pd.DataFrame({"store": np.repeat(np.arange(K), n),
                       "units": rng.gamma(2.0, np.repeat(rng.uniform(1, 3, K), n)),
                       "seen": (rng.uniform(size=K * n) > 0.1).astype(int)})
    df = df.sample(frac=1.0, random_state=1)  # keys spread over every row group and file
    d = tmp_path_factory.mktemp("ds")
    for i in range(3):
        part = df.iloc[i * 3000:(i + 1) * 3000]
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False),
                       d / f"part-{i}.parquet", row_group_size=1000)
    return df, str(d)


def test_partitions_fitted_one_by_one_equal_the_in_memory_fleet(dataset):
    df, path = dataset
    budget = 2500 * BYTES_PER_ROW  # 9,000 rows: 4 partitions
    assert partitions_for(len(df), budget) == 4
    streamed = fit_fleet_streamed(path, "weibull", key="store", column="units", event="seen",
                                  max_memory=budget)
    whole = mleops.fit_fleet(df, "weibull", key="store", column="units", event="seen")
    assert streamed.key_list() == whole.key_list() == list(range(60))
    np.testing.assert_allclose(streamed.param_array, whole.param_array, rtol=1e-9)
    np.testing.assert_allclose(streamed.loglik_array, whole.loglik_array, rtol=1e-10)
    np.testing.assert_array_equal(streamed.n_obs_array, whole.n_obs_array)
    assert list(streamed.status_array) == list(whole.status_array)
    one = fit_fleet_streamed(path, "weibull", key="store", column="units", event="seen",
                             max_memory=10**9)  # fits: one partition, no spill
    np.testing.assert_allclose(one.param_array, whole.param_array, rtol=1e-9)


def test_bad_streamed_input_is_a_clear_error(dataset, tmp_path):
    _, path = dataset
    with pytest.raises(DataError, match=r"column\(s\) \['nope'\] not in"):
        fit_fleet_streamed(path, "gamma", key="nope", column="units", max_memory=10**6)
    csv = tmp_path / "x.csv"
    csv.write_text("store,units\na,1\n")
    with pytest.raises(DataError, match="reads Parquet"):
        fit_fleet_streamed(str(csv), "gamma", key="store", column="units", max_memory=10**6)
    with pytest.raises(DataError, match="must be positive"):
        partitions_for(10, 0)


def test_the_cli_streams_a_fleet_under_max_memory(dataset, tmp_path):
    import json

    from click.testing import CliRunner

    from mleops.cli.main import main
    from mleops.fleet_artifact import FleetArtifact

    df, path = dataset
    out = CliRunner().invoke(main, ["fit", path, "--family", "weibull", "--key-column",
                                    "store", "--column", "units", "--censor-column", "seen",
                                    "--max-memory", "600KB", "--json", "--model-dir",
                                    str(tmp_path / "fleet"), "--unknown-key", "pooled"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["n_keys"] == 60 and doc["status_counts"] == {"converged": 60}
    art = FleetArtifact.load(str(tmp_path / "fleet"))
    whole = mleops.fit(df.units.to_numpy(), "weibull", event=df.seen.to_numpy())
    assert art.pooled == pytest.approx(dict(whole.params), rel=1e-6)
