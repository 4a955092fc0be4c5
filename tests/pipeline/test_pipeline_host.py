"""``mleops pipeline run --host``: what CI gates on. The real CLI submits to a KFP v2beta1 API
stub on 127.0.0.1 (``support.kfp``) that records every request; in the main test the stub
runs the submitted arguments with the kfp local runner - the pods of a cluster - reading the
data from a real S3 API (moto) and writing to a real MLflow server. The CLI waits for the run
and exits with the local run's codes; whatever cannot work in a pod is refused before
anything is sent."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.kfp import kfp_stub
from support.s3 import client, s3_server

MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")
BUCKET = "telemetry"
TOKEN = "s3cr3t-token"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostdata")
    rng = np.random.default_rng(11)
    pq.write_table(pa.table({"latency": rng.gamma(2.0, 1.5, 2000)}), d / "train.parquet")
    np.savetxt(d / "val.csv", rng.gamma(2.0, 1.5, 1000), header="latency", comments="",
               fmt="%.10g")
    with s3_server(BUCKET) as env:
        c = client(env)
        for name in ("train.parquet", "val.csv"):
            c.upload_file(str(d / name), BUCKET, f"in/{name}")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the stub's "pods" (this process's kfp local runner) read S3
        try:
            yield {**env, "dir": d}
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def cli(env, *args, token=TOKEN):
    extra = {"KFP_TOKEN": token} if token else {}
    out = subprocess.run([MLEOPS, "pipeline", "run", *args], capture_output=True, text=True,
                         timeout=600, env={**os.environ, **{k: v for k, v in env.items()
                                                          if k != "dir"},
                                           **extra, "MLEOPS_KFP_POLL_S": "0.2",
                                           "MLEOPS_JAX_CACHE": "off"})
    return out


def args(model, mlflow_uri, *more):
    return ["--data", f"s3://{BUCKET}/in/train.parquet", "--validation-data",
            f"s3://{BUCKET}/in/val.csv", "--family", "gamma", "--model-name", model,
            "--tracking-uri", mlflow_uri, *more]


def pods(root):
    """What a cluster does with a submitted run: each task in a process of its own, with no
    directory shared with the CLI (so no ``$MLEOPS_TASK_ERRORS``: a failing task can only
    leave its cause on the MLflow run)."""
    def run(params):
        from kfp import local

        from mleops_pipelines import training

        assert "MLEOPS_TASK_ERRORS" not in os.environ
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
                   raise_on_error=True)
        training.training_pipeline(**params)
    return run


def one_error(out) -> str:
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-2000:]
    return errors[0]


def test_a_cluster_run_is_followed_to_its_end_and_a_rerun_adds_nothing(s3, mlflow_server,  # noqa: F811
                                                                       tmp_path):
    with kfp_stub(token=TOKEN, execute=pods(tmp_path / "root")) as kfp:
        out = cli(s3, *args("host-latency", mlflow_server, "--host", kfp.url, "--namespace",
                            "team-a", "--experiment", "nightly", "--git-commit", "c0ffee" * 6
                            + "ab", "--json"))
        assert out.returncode == 0, out.stderr[-3000:]
        s = json.loads(out.stdout)
        assert s["registered_version"] == "1" and s["gate"]["passed"]
        assert s["kfp_run_id"] in kfp.runs
        assert {r["authorization"] for r in kfp.requests} == {f"Bearer {TOKEN}"}
        (exp,) = kfp.experiments.values()
        assert exp["display_name"] == "nightly" and exp["namespace"] == "team-a"
        (body,) = kfp.created_runs()
        p = body["runtime_config"]["parameters"]
        assert p["data_uri"] == f"s3://{BUCKET}/in/train.parquet"
        assert p["tracking_uri"] == mlflow_server and p["git_commit"] == "c0ffee" * 6 + "ab"
        assert len(p["candidate_key"]) == 64 and "+" in p["code_version"]
        # the definition's per-task caching reached the host untouched (client left it None)
        root = body["pipeline_spec"]["root"]["dag"]["tasks"]
        assert not root["evaluate"].get("cachingOptions", {}).get("enableCache")
        assert not root["gate"].get("cachingOptions", {}).get("enableCache")

        import mlflow

        mv = mlflow.MlflowClient(mlflow_server).get_model_version("host-latency", "1")
        assert mv.tags["mleops.git_commit"] == "c0ffee" * 6 + "ab"
        assert mv.tags["mleops.candidate_key"] == p["candidate_key"]
        assert mv.tags["mleops.code_version"] == p["code_version"]

        again = cli(s3, *args("host-latency", mlflow_server, "--host", kfp.url))
        assert again.returncode == 5, again.stderr[-2000:]
        assert "nothing to do: version 1 of host-latency" in again.stdout
        assert len(kfp.created_runs()) == 1  # nothing submitted


def test_a_task_that_fails_in_its_pod_is_the_last_line(s3, mlflow_server, tmp_path,  # noqa: F811
                                                       monkeypatch):
    """The pods have no Kubernetes credentials, so ``deploy --deploy-apply`` fails there. The
    KFP API says only "Error (exit code 1)" of task deploy; the task left its own error on
    the pipeline's MLflow run (marked FAILED), and the CLI's last line (and JSON) is that."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with kfp_stub(token=TOKEN, execute=pods(tmp_path / "root")) as kfp:
        out = cli(s3, *args("host-nokube", mlflow_server, "--host", kfp.url,
                            "--deploy-apply", "--artifacts-destination",
                            f"s3://{BUCKET}/artifacts", "--json"))
    assert out.returncode == 1, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("task 'deploy' failed: DeployError: no Kubernetes "
                           "configuration"), out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["task"] == "deploy" and doc["cause"] == "DeployError" and doc["exit_code"] == 1
    assert doc["error"] == last and one_error(out)

    import mlflow

    (run,) = mlflow.MlflowClient(mlflow_server).search_runs(
        [mlflow.MlflowClient(mlflow_server).get_experiment_by_name("host-nokube")
         .experiment_id])
    assert run.info.status == "FAILED"
    assert json.loads(run.data.tags["mleops.task_failure"])["task"] == "deploy"


@pytest.mark.parametrize("states,error,task,more,message", [
    (("RUNNING", "FAILED"), "task train: OOMKilled", "", [],
     "ended FAILED: task train: OOMKilled"),
    # a task that could not reach MLflow: the API's task_details are all there is to say
    (("RUNNING", "FAILED"), "", "train", [],
     "task 'train' failed: Error (exit code 1) (its pod log has more)"),
    (("RUNNING",), "", "", ["--timeout", "1"], "ended TIMEOUT: still RUNNING after 1 s"),
    (("RUNNING", "CANCELED"), "", "", [], "ended CANCELED"),
])
def test_a_failed_or_unfinished_run_exits_1_in_one_line(s3, mlflow_server, states, error,  # noqa: F811
                                                        task, more, message):
    with kfp_stub(token=TOKEN, states=states, error=error, failed_task=task) as kfp:
        out = cli(s3, *args("host-failing", mlflow_server, "--host", kfp.url, *more))
    assert out.returncode == 1 and one_error(out)
    assert message in out.stderr.strip().splitlines()[-1]  # the cause is the last line


def test_a_host_that_stops_answering_is_a_one_line_timeout_not_a_hang(s3, mlflow_server):  # noqa: F811
    """The run is submitted, then the host takes every poll's connection and never answers:
    each call's socket timeout (here 1 s, urllib3 retrying a GET 3 times) ends the wait with
    one line, long before the run's own --timeout."""
    with kfp_stub(token=TOKEN, states=("RUNNING",), hang="/apis/v2beta1/runs/") as kfp:
        out = cli({**s3, "MLEOPS_KFP_REQUEST_TIMEOUT_S": "1"},
                  *args("host-hung", mlflow_server, "--host", kfp.url, "--timeout", "3000"))
        assert len(kfp.created_runs()) == 1
        assert [r for r in kfp.requests if r.get("hung")]
    assert out.returncode == 1
    assert "reading run" in (err := one_error(out)) and "no answer within 1 s" in err, err


def test_no_wait_only_submits(s3, mlflow_server):  # noqa: F811
    with kfp_stub(token=TOKEN, states=("RUNNING",)) as kfp:
        out = cli(s3, *args("host-nowait", mlflow_server, "--host", kfp.url, "--no-wait"))
        assert out.returncode == 0, out.stderr[-2000:]
        assert "submitted KFP run" in out.stdout and len(kfp.created_runs()) == 1
        assert not kfp.calls("GET", f"/apis/v2beta1/runs/{next(iter(kfp.runs))}")


def test_host_errors_are_one_line(s3, mlflow_server, tmp_path):  # noqa: F811
    with kfp_stub(token=TOKEN) as kfp:
        denied = cli(s3, *args("host-denied", mlflow_server, "--host", kfp.url), token="")
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        by_file = cli(s3, *args("host-file", mlflow_server, "--host", kfp.url, "--token-file",
                                str(token_file), "--no-wait"), token="")
    assert denied.returncode == 1 and "HTTP 401: not authorised" in one_error(denied)
    assert by_file.returncode == 0, by_file.stderr[-2000:]
    gone = cli(s3, *args("host-gone", mlflow_server, "--host", "http://127.0.0.1:9"))
    assert gone.returncode == 1 and "cannot connect" in one_error(gone)


@pytest.mark.parametrize("flag,value,message", [
    ("--data", "{dir}/train.parquet", "a local path cannot be read by the cluster's pods"),
    ("--validation-data", "{dir}/val.csv", "a local path cannot be read by the cluster's pods"),
    ("--tracking-uri", "sqlite:///mlruns.db", "the cluster's pods need an MLflow server URL"),
    ("--artifacts-destination", "mlartifacts", "not a URI the cluster can reach"),
    ("--pipeline-root", "/tmp/root", "not a URI the cluster can reach"),
])
def test_what_cannot_work_in_a_pod_is_refused_before_submission(s3, mlflow_server, flag,  # noqa: F811
                                                                value, message):
    value = value.format(dir=s3["dir"])  # local files that exist: only the place is wrong
    a = dict(zip(*[iter(args("host-portable", mlflow_server))] * 2))
    a[flag] = value
    with kfp_stub(token=TOKEN) as kfp:
        out = cli(s3, *[x for kv in a.items() for x in kv], "--host", kfp.url)
        assert kfp.requests == []
    assert out.returncode == 2 and f"{flag} {value}: {message}" in one_error(out)


@pytest.mark.parametrize("more,message", [
    (["--model-name", "Latency_Model!"], "--model-name 'Latency_Model!': its SeldonDeployment "
                                         "name 'latency-model!' is not a valid Kubernetes name"),
    (["--deploy-canary-traffic", "150"], "--deploy-canary-traffic 150: a percentage, 0 to 100"),
    (["--deploy-namespace", "Team A"], "--deploy-namespace 'Team A' is not a valid Kubernetes"),
    (["--namespace", "team-a"], "--namespace needs --host"),
])
def test_deploy_settings_that_cannot_render_are_refused_up_front(s3, mlflow_server, more,  # noqa: F811
                                                                 message):
    out = cli(s3, *args("host-deploy", mlflow_server), *more)
    assert out.returncode == 2 and message in one_error(out)
