"""The fleet artifact: a keyed table of one family's fits, saved as Parquet + JSON, scored
by key in one kernel, refusing unknown keys by name (or answering them with the pooled fit)."""

import json

import numpy as np
import pandas as pd
import pytest

import mleops
from mleops.artifact import ModelArtifact
from mleops.errors import DataError
from mleops.fleet_artifact import HEADER, FleetArtifact, key_strings


@pytest.fixture(scope="module")
def fleet():
    rng = np.random.default_rng(0)
    K, n = 30, 150
    keys = np.repeat(np.arange(K), n)  # integer store ids: matched as strings
    x = rng.gamma(2.0, np.repeat(rng.uniform(1, 3, K), n))
    keys[:n - 3] = 29  # key 0 keeps 3 rows: too few to fit
    df = pd.DataFrame({"store": keys, "x": x})
    return df, mleops.fit_fleet(df, "gamma", key="store", column="x", min_rows=5)


def test_rows_score_as_their_key_fitted_alone_and_survive_a_round_trip(fleet, tmp_path):
    df, f = fleet
    art = FleetArtifact.load(FleetArtifact.from_fleet(f).save(str(tmp_path / "f")))
    assert len(art) == len(f) == 30 and art.key_names == ["store"]
    x = np.array([0.5, 2.0, 7.5, 1.0])
    keys = np.array(["3", "17", "3", "29"])
    got = art.loglik_rows(x, [keys])
    for i, k in enumerate(keys):
        alone = mleops.fit(df.x[df.store == int(k)].to_numpy(), "gamma")
        want = ModelArtifact.from_fit(alone).loglik_rows(x[i:i + 1])[0]
        assert got[i] == pytest.approx(want, rel=1e-9, abs=1e-9)
    ints = art.loglik_rows(x, [np.array([3, 17, 3, 29])])  # the same keys as integers
    np.testing.assert_array_equal(ints, got)


def test_unknown_and_unfitted_keys_are_refused_by_name(fleet):
    _, f = fleet
    art = FleetArtifact.from_fleet(f)
    assert not art.servable[art.key_tuples().index(("0",))]  # too few rows
    with pytest.raises(DataError, match=r"1 unknown key\(s\) in \['store'\]: '0' \('0' has "
                                        r"no usable estimate"):
        art.loglik_rows(np.ones(2), [np.array(["3", "0"])])
    with pytest.raises(DataError, match="'nope' is not in this fleet"):
        art.loglik_rows(np.ones(2), [np.array(["nope", "3"])])
    many = np.array([f"k{i}" for i in range(10**6)], dtype=object)
    with pytest.raises(DataError) as e:  # 10^6 distinct unknown keys: a bounded message
        art.rows_of([many])
    assert "1000000 unknown key(s)" in str(e.value) and len(str(e.value)) < 300
    with pytest.raises(DataError, match="empty key"):
        art.rows_of([np.array(["3", ""])])
    with pytest.raises(DataError, match="have no key"):
        art.rows_of([np.array(["3", None], dtype=object)])
    with pytest.raises(DataError, match="keyed by"):
        art.rows_of([np.array(["3"]), np.array(["a"])])


def test_a_pooled_fleet_answers_unknown_keys_with_the_pooled_fit(fleet):
    df, f = fleet
    pooled = mleops.fit(df.x.to_numpy(), "gamma")
    art = FleetArtifact.from_fleet(f, pooled=pooled, unknown_key="pooled")
    got = art.loglik_rows(np.array([2.0, 2.0]), [np.array(["nope", "3"])])
    assert got[0] == pytest.approx(ModelArtifact.from_fit(pooled).loglik_rows([2.0])[0])
    assert art.rows_of([np.array(["nope", "3"])])[0] == -1
    with pytest.raises(DataError, match="needs the pooled fit"):
        FleetArtifact.from_fleet(f, unknown_key="pooled")
    with pytest.raises(DataError, match="unknown_key must be one of"):
        FleetArtifact.from_fleet(f, unknown_key="guess")


def test_the_header_carries_digests_and_a_swapped_table_is_refused(fleet, tmp_path):
    _, f = fleet
    art = FleetArtifact.from_fleet(f)
    d = art.digests()
    assert d["mleops.fleet.key_count"] == "30" and d["mleops.fleet.family"] == "gamma"
    assert len(d["mleops.fleet.key_set_sha256"]) == 64
    path = art.save(str(tmp_path / "f"))
    header = json.loads((tmp_path / "f" / HEADER).read_text())
    header["digests"]["mleops.fleet.key_set_sha256"] = "0" * 64
    (tmp_path / "f" / HEADER).write_text(json.dumps(header))
    with pytest.raises(DataError, match="do not match the digests"):
        FleetArtifact.load(path)
    with pytest.raises(DataError, match="no fleet artifact"):
        FleetArtifact.load(str(tmp_path / "missing"))


def test_key_strings():
    assert key_strings([1, "a", b"b"]).tolist() == ["1", "a", "b"]
    with pytest.raises(DataError, match="one value per row"):
        key_strings(np.zeros((2, 2)))


def test_the_cli_writes_a_fleet_artifact_with_its_pooled_fallback(tmp_path):
    from click.testing import CliRunner

    from mleops.cli.main import main

    rng = np.random.default_rng(4)
    df = pd.DataFrame({"store": np.repeat(["a", "b", "c"], 120),
                       "units": rng.gamma(2.0, np.repeat([1.0, 2.0, 3.0], 120))})
    df.to_parquet(tmp_path / "sales.parquet")
    out = CliRunner().invoke(main, ["fit", str(tmp_path / "sales.parquet"), "--family",
                                    "gamma", "--key-column", "store", "--model-dir",
                                    str(tmp_path / "fleet"), "--unknown-key", "pooled"])
    assert out.exit_code == 0, out.output
    art = FleetArtifact.load(str(tmp_path / "fleet"))
    assert art.unknown_key == "pooled" and len(art) == 3
    pooled = mleops.fit(df.units.to_numpy(), "gamma")
    assert art.pooled == pytest.approx(dict(pooled.params))
    bad = CliRunner().invoke(main, ["fit", str(tmp_path / "sales.parquet"), "--family",
                                    "gamma", "--column", "units", "--model-dir",
                                    str(tmp_path / "x")])
    assert bad.exit_code == 2 and "needs --key-column" in bad.output
