"""The train step as a Kubeflow Trainer TrainJob, tested by contract: the data lies on a real
S3 API (moto), the Kubernetes API is a recording double whose job "completes" by writing the
fit where the TrainJob's ``--output`` says, and the step must build the same model artifact
as an in-process fit. Below the threshold nothing is sent to any cluster."""

import copy
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.kubernetes import RecordingApi
from support.s3 import client, s3_server

from mleops.artifact import ModelArtifact
from mleops.deploy import TRAINJOB, DeployError
from mleops.errors import DataError
from mleops.fit import fit
from mleops.pipeline import RunRequest, steps
from mleops.pipeline.dataset import ColumnSpec
from mleops.pipeline.trainjob import TrainJobSettings, needs_trainjob
from mleops.storage import locate

BUCKET = "telemetry"
DATA = f"s3://{BUCKET}/in/latency.parquet"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    d = tmp_path_factory.mktemp("tj")
    x = np.random.default_rng(8).gamma(2.0, 1.5, 400)
    pq.write_table(pa.table({"latency": x}), d / "latency.parquet")
    with s3_server(BUCKET) as env:
        client(env).upload_file(str(d / "latency.parquet"), BUCKET, "in/latency.parquet")
        yield {**env, "x": x}


@pytest.fixture
def aws(s3, monkeypatch):
    for k, v in s3.items():
        if k != "x":
            monkeypatch.setenv(k, v)
    return s3


@pytest.fixture
def ingested(aws, tmp_path):
    """The data as ingest stores it: all of it trains (held-out rows: --validation-data)."""
    path = str(tmp_path / "train.parquet")
    steps.ingest(DATA, path, family="gamma", spec=ColumnSpec.from_params("latency"))
    return path


def _job(*condition):
    status = {"conditions": [{"type": t, "status": "True", "reason": r, "message": m}
                             for t, r, m in condition]}
    return {"metadata": {"name": "x"}, "status": status}


class Cluster:
    """The API double plus the job's effect: polled Complete, it has written its result
    (a real fit of the data) to the ``--output`` of the TrainJob that was created."""

    def __init__(self, *polls, result: dict | None = None):
        self.api = RecordingApi(create_namespaced_custom_object=[{}],
                                get_namespaced_custom_object=[copy.deepcopy(p) for p in polls])
        self.result, self.created = result, None

    def create_namespaced_custom_object(self, **kw):
        self.created = kw["body"]
        return self.api.create_namespaced_custom_object(**kw)

    def get_namespaced_custom_object(self, **kw):
        obj = self.api.get_namespaced_custom_object(**kw)
        done = [c["type"] for c in (obj.get("status") or {}).get("conditions", [])] == [
            "Complete"]
        if done and self.result is not None:
            args = self.created["spec"]["trainer"]["args"]
            f, path = locate(args[args.index("--output") + 1])
            f.create_dir(os.path.dirname(path), recursive=True)
            with f.open_output_stream(path) as out:
                out.write(json.dumps(self.result).encode())
        return obj


def _settings(result_uri, **kw):
    return TrainJobSettings(**{"min_bytes": 1, "result_uri": result_uri, "nodes": 3,
                               "poll_s": 0, **kw})


@pytest.mark.parametrize("store", ["file", "s3"])
def test_above_the_threshold_the_fit_is_a_trainjob_and_the_artifact_is_the_same(
        aws, ingested, tmp_path, store):
    result_uri = f"file://{tmp_path}/results" if store == "file" else f"s3://{BUCKET}/results"
    running = _job(("Created", "Created", "jobset created"))
    cluster = Cluster({}, running, _job(("Complete", "AllJobsCompleted", "done")),
                      result=fit(aws["x"], "gamma").to_dict())
    art = steps.train(ingested, str(tmp_path / "model"), family="gamma",
                      trainjob=_settings(result_uri), api=cluster)

    m = cluster.created
    name = m["metadata"]["name"]
    out = f"{result_uri}/{name}/fit.json"
    assert m["spec"]["trainer"]["args"] == ["fit", DATA, "--family", "gamma", "--column",
                                            "latency", "--method", "auto", "--output", out,
                                            "--distributed"]
    assert m["spec"]["trainer"]["numNodes"] == 3
    ref = TRAINJOB.ref("models")
    assert cluster.api.calls == [
        ("create_namespaced_custom_object", dict(body=m, _request_timeout=30.0, **ref)),
        *[("get_namespaced_custom_object", dict(name=name, _request_timeout=30.0, **ref))] * 3]

    local = steps.train(ingested, str(tmp_path / "local"), family="gamma")  # in-process
    assert art.metadata.pop("trainjob") == f"models/{name}"
    assert art.params == pytest.approx(local.params) and art.n_obs == local.n_obs == 400
    assert art.metadata == local.metadata  # provenance, sketch and device alike
    assert ModelArtifact.load(str(tmp_path / "model")).params == art.params


def test_a_failed_trainjob_fails_the_step_with_its_reason(aws, ingested, tmp_path):
    cluster = Cluster(_job(("Failed", "DeadlineExceeded", "exceeded activeDeadlineSeconds")))
    with pytest.raises(DeployError, match=r"TrainJob models/fit-gamma-[0-9a-f]{8} failed "
                                          r"\(DeadlineExceeded\): exceeded activeDeadline"):
        steps.train(ingested, str(tmp_path / "model"), family="gamma",
                    trainjob=_settings(f"file://{tmp_path}/r"), api=cluster)
    assert not (tmp_path / "model").exists()


def test_a_complete_job_without_its_result_is_a_clear_error(aws, ingested, tmp_path):
    cluster = Cluster(_job(("Complete", "AllJobsCompleted", "done")))  # wrote nothing
    with pytest.raises(DataError, match="the TrainJob's result file://.*/fit.json cannot be "
                                        "read"):
        steps.train(ingested, str(tmp_path / "model"), family="gamma",
                    trainjob=_settings(f"file://{tmp_path}/r"), api=cluster)


def test_below_the_threshold_or_by_default_nothing_reaches_a_cluster(aws, ingested, tmp_path):
    nobody = RecordingApi()  # any call fails
    for job in (None, TrainJobSettings(), _settings("", min_bytes=10 ** 9)):
        art = steps.train(ingested, str(tmp_path / "m"), family="gamma", trainjob=job,
                          api=nobody)
        assert "trainjob" not in art.metadata
    assert nobody.calls == []


def test_what_a_trainjob_cannot_do_is_refused(aws, tmp_path):
    local = tmp_path / "lat.csv"
    np.savetxt(local, aws["x"], header="latency", comments="", fmt="%.10g")
    with pytest.raises(DataError, match="above --trainjob-min-bytes 1, so a TrainJob fits it, "
                                        "and its pods cannot read a local path"):
        needs_trainjob(str(local), 1)
    assert not needs_trainjob(str(local), 0) and not needs_trainjob(DATA, 10 ** 9)
    base = dict(data_uri=DATA, family="gamma", model_name="latency", column="latency",
                trainjob_min_bytes=1)
    with pytest.raises(DataError, match="give --validation-data for the held-out rows"):
        RunRequest(**base, trainjob_result_uri="s3://b/r").validate()
    with pytest.raises(DataError, match="needs --trainjob-result-uri"):
        RunRequest(**base, validation_data_uri=DATA).validate()
    with pytest.raises(DataError, match="namespace 'Team A'"):
        RunRequest(**base, validation_data_uri=DATA, trainjob_result_uri="s3://b/r",
                   trainjob_namespace="Team A").validate()
    RunRequest(**base, validation_data_uri=DATA, trainjob_result_uri="s3://b/r").validate()
    split = str(tmp_path / "split.parquet")  # held-out rows split off: not all rows train
    steps.ingest(DATA, str(tmp_path / "all.parquet"), family="gamma",
                 spec=ColumnSpec.from_params("latency"))
    steps.split(str(tmp_path / "all.parquet"), split, str(tmp_path / "held.parquet"), seed=0,
                holdout_fraction=0.2, time_ordered=False)
    with pytest.raises(DataError, match="a TrainJob fits every row of --data"):
        steps.train(split, str(tmp_path / "m"), family="gamma",
                    trainjob=_settings("s3://b/r"), api=RecordingApi())


@pytest.mark.parametrize("kw,message", [
    (dict(deploy_target="knative"), "--deploy-target 'knative': one of ['kserve', 'seldon']"),
    (dict(deploy_target="kserve", deploy_mode="RawDeployment"),
     "--deploy-mode RawDeployment: KServe splits no canary traffic"),
    (dict(deploy_target="kserve", model_name="9-lives"),
     "its InferenceService name '9-lives' is not a valid Kubernetes name"),
    (dict(deploy_target="kserve", model_name="m" * 41), "at most 40"),
])
def test_deploy_target_settings_that_cannot_render_are_refused(aws, kw, message):
    req = RunRequest(**{"data_uri": DATA, "family": "gamma", "model_name": "latency",
                        "column": "latency", **kw})
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        req.validate()
