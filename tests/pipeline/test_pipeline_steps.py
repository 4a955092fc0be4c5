"""Pipeline step logic without KFP: ingest schema, deterministic splits, hash checks."""

import numpy as np
import pytest

from mleops.errors import DataError
from mleops.pipeline import steps
from mleops.pipeline.dataset import ColumnSpec, read_dataset, split_indices


def test_seeded_split_is_deterministic_and_disjoint():
    a_tr, a_ho = split_indices(1000, seed=7, holdout_fraction=0.2, time_ordered=False)
    b_tr, b_ho = split_indices(1000, seed=7, holdout_fraction=0.2, time_ordered=False)
    c_tr, _ = split_indices(1000, seed=8, holdout_fraction=0.2, time_ordered=False)
    assert (a_tr == b_tr).all() and (a_ho == b_ho).all() and not (a_tr == c_tr).all()
    assert len(a_ho) == 200 and not set(a_tr) & set(a_ho)
    assert sorted([*a_tr, *a_ho]) == list(range(1000))


def test_time_ordered_split_holds_out_the_latest_rows():
    order = np.random.default_rng(3).permutation(40).astype(float)
    tr, ho = split_indices(40, seed=0, holdout_fraction=0.25, time_ordered=True, order=order)
    assert set(order[ho]) == set(range(30, 40))
    assert order[tr].max() < order[ho].min()


def test_too_few_rows_and_bad_fraction():
    with pytest.raises(DataError, match="too few rows to split"):
        split_indices(4, seed=0, holdout_fraction=0.2, time_ordered=False)
    with pytest.raises(DataError, match="the gate needs at least 10 held-out rows"):
        split_indices(45, seed=0, holdout_fraction=0.2, time_ordered=False)  # 9 held out
    split_indices(50, seed=0, holdout_fraction=0.2, time_ordered=False)  # 10 held out
    with pytest.raises(DataError, match=r"holdout fraction must lie in \(0, 1\)"):
        split_indices(100, seed=0, holdout_fraction=1.0, time_ordered=False)


def test_ingest_writes_schema_and_checks_the_hash(tmp_path):
    src = tmp_path / "d.csv"
    src.write_text("t,obs,age\n" + "".join(f"{1 + i % 5},{i % 2},{20 + i}\n" for i in range(40)))
    spec = ColumnSpec.from_params("t", "", "", "age", "")
    meta = steps.ingest(str(src), str(tmp_path / "ds.parquet"), family="poisson_glm", spec=spec)
    t = read_dataset(str(tmp_path / "ds.parquet"))
    assert t.n == 40 and t.features == ("const", "age") and t.meta["response"] == "t"
    assert t.X.shape == (40, 2) and (t.X[:, 1] == 20 + np.arange(40)).all()
    with pytest.raises(DataError, match="changed since the run was submitted"):
        steps.ingest(str(src), str(tmp_path / "ds2.parquet"), family="poisson_glm", spec=spec,
                     expect_hash="0" * 64)
    with pytest.raises(DataError, match="family weibull takes no covariates"):
        steps.ingest(str(src), str(tmp_path / "ds3.parquet"), family="weibull", spec=spec)
    cens = ColumnSpec.from_params("t", "obs", "", "", "")
    steps.ingest(str(src), str(tmp_path / "ds4.parquet"), family="weibull", spec=cens)
    assert (read_dataset(str(tmp_path / "ds4.parquet")).event == np.arange(40) % 2).all()
    assert meta["data_hash"] != "0" * 64
    with pytest.raises(DataError, match="training data: no filesystem for nope:// in"):
        steps.ingest("nope://bucket/d.csv", str(tmp_path / "x.parquet"), family="gamma",
                     spec=spec)


def test_held_out_rows_the_champion_trained_on_are_found(rng):
    """The champion's training-row sketch tells a fair comparison from an unfair one."""
    from mleops.pipeline.dataset import Table
    from mleops.pipeline.overlap import overlap, sketch

    x = rng.gamma(2.0, 1.0, 20000)
    train = sketch(Table(x[:16000]))
    assert overlap(Table(x[16000:]), train)["share"] == 0.0  # disjoint split
    assert overlap(Table(x[8000:12000]), train)["share"] == 1.0  # scored on its own rows
    part = overlap(Table(np.concatenate([x[15000:16000], x[16000:19000]])), train)["share"]
    assert 0.15 < part < 0.35  # a quarter of them, estimated from the sketch
    small = sketch(Table(x[:500]))  # fewer rows than the sketch holds: exact
    assert overlap(Table(x[400:600]), small) == {"share": 0.5, "exact": True,
                                                 "rows_compared": 200, "note": "exact"}
    counts = overlap(Table(rng.poisson(2, 3000).astype(float)),
                     sketch(Table(rng.poisson(2, 9000).astype(float))))
    assert counts["share"] is None and "undetermined" in counts["note"]


class _Registry:
    """What the deploy step asks of the registry: the versions (the champion's alias) and
    where a version lies."""

    def __init__(self, uri=None):
        pass

    def list_versions(self, name):
        return [{"version": "1", "aliases": ["champion"]}, {"version": "2", "aliases": []}]

    def download_uri(self, name, version):
        return f"s3://mlops-bucket/mlartifacts/1/models/m-{version}"


@pytest.mark.parametrize("target,mode,kind", [
    ("seldon", "Serverless", "SeldonDeployment"),
    ("kserve", "Serverless", "InferenceService"),
    ("kserve", "Standard", "InferenceService"),
])
def test_deploy_renders_the_chosen_target_valid_against_its_crd(tmp_path, monkeypatch, target,
                                                                mode, kind):
    import yaml

    from mleops.deploy import TARGETS

    monkeypatch.setattr("mleops.registry.Registry", _Registry)
    path = tmp_path / "manifest.yaml"
    out = steps.deploy("latency", "2", str(path), target=target, deployment_mode=mode,
                       canary_traffic=25)
    m = yaml.safe_load(path.read_text())
    assert TARGETS[target][1](m) is m  # the target's own CRD and webhook rules
    assert out == {"champion": "1", "canary": "2", "rendered": True, "validated": True,
                   "applied": False, "kind": kind}
    assert m["kind"] == kind and m["metadata"]["name"] == "latency"
    if target == "kserve":
        assert m["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
        spec = m["spec"]
        split = (spec["predictor"]["canaryTrafficPercent"] if mode == "Serverless"
                 else spec["canary"][0]["trafficPercent"])
        assert split == 25
