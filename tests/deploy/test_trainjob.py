"""Kubeflow Trainer v2 TrainJobs and the mleops runtime checked against the real CRDs and the
Trainer's webhook rules; the start-up env parsing; submit-and-wait against a recording API;
and the pods' program run for real with the Trainer's JAX_* variables."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from support.kubernetes import RecordingApi
from test_jaxjob import _free_port

import mleops
from mleops._version import IMAGE
from mleops.deploy.k8s import DeployError
from mleops.deploy.trainjob import (
    NODE,
    TRAINJOB,
    default_crd_path,
    render_trainjob,
    submit_and_wait,
    validate_runtime,
    validate_trainjob,
)
from mleops.errors import DataError
from mleops.fit import sharded

REPO = Path(__file__).resolve().parents[2]
RUNTIME_YAML = REPO / "infra" / "k8s" / "jobs" / "mleops-jax-runtime.yaml"


def _render(**kw):
    args = dict(data_uri="s3://data/latency.parquet", family="weibull", num_nodes=4,
                column="latency", censor_column="observed")
    return render_trainjob("fit-latency", **{**args, **kw})


def _pod(manifest: dict) -> dict:
    job = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"][0]
    return job["template"]["spec"]["template"]["spec"]


# --- manifests -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["trainer-trainjob-crd.yaml",
                                  "trainer-clustertrainingruntime-crd.yaml"])
def test_crds_are_vendored_verbatim(name):
    vendored = REPO / "src" / "mleops" / "deploy" / "crds" / name
    assert vendored.is_file() and default_crd_path().is_file()
    shared = REPO.parent / "shared" / "schemas" / name
    if shared.is_file():
        assert shared.read_bytes() == vendored.read_bytes()


@pytest.mark.parametrize("data_uri,path,volume", [
    ("s3://data/latency.parquet", "s3://data/latency.parquet", None),
    ("pvc://datasets/claims/2024.csv", "/mnt/data/claims/2024.csv", "datasets"),
    ("/opt/data/latency.csv", "/opt/data/latency.csv", None),
])
def test_renders_validate_and_the_data_reaches_the_command(data_uri, path, volume):
    m = _render(data_uri=data_uri, env_secret_ref_name="mlflow-s3", gpus=1,
                service_account="fitter", active_deadline_seconds=3600)
    assert validate_trainjob(m) is m
    t = m["spec"]["trainer"]
    assert m["spec"]["runtimeRef"] == {"name": "mleops-jax", "apiGroup": "trainer.kubeflow.org",
                                       "kind": "ClusterTrainingRuntime"}
    assert t["command"] == ["mleops"] and t["args"][-1] == "--distributed"
    assert t["args"][:4] == ["fit", path, "--family", "weibull"]
    assert t["numNodes"] == 4 and t["image"] == IMAGE
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    assert m["spec"]["activeDeadlineSeconds"] == 3600
    pod = _pod(m)
    assert pod["serviceAccountName"] == "fitter" and pod["securityContext"]["runAsNonRoot"]
    assert [c["name"] for c in pod["containers"]] == [NODE] and "initContainers" not in pod
    if volume:
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == volume
    else:
        assert "volumes" not in pod
    keys = [e["valueFrom"]["secretKeyRef"] for e in t.get("env", [])]
    # the pods read an object store themselves, with the secret's AWS_* keys
    assert {k["name"] for k in keys} == ({"mlflow-s3"} if data_uri.startswith("s3") else set())


def test_the_stock_runtime_takes_the_same_trainjob():
    assert validate_trainjob(_render(runtime="jax-distributed"))["spec"]["runtimeRef"][
        "name"] == "jax-distributed"


def test_the_shipped_runtime_validates_and_carries_the_release_image():
    runtime = yaml.safe_load(RUNTIME_YAML.read_text())
    assert validate_runtime(runtime) is runtime
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "jax"
    node = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert node["template"]["spec"]["backoffLimit"] == 0
    assert node["template"]["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE


def _runtime_node(r):
    return r["spec"]["template"]["spec"]["replicatedJobs"][0]


@pytest.mark.parametrize("breakage,message", [
    (lambda r: r["spec"]["mlPolicy"].pop("jax"), "spec.mlPolicy.jax: required"),
    (lambda r: _runtime_node(r)["template"]["spec"].update(backoffLimit="0"),
     "backoffLimit: '0' is not of type 'integer'"),
    (lambda r: _runtime_node(r).update(name="worker"), "needs a job 'node'"),
    (lambda r: _runtime_node(r)["template"]["spec"]["template"]["spec"]["containers"][0]
     .update(name="jax"), "needs a container named 'node'"),
])
def test_a_broken_runtime_fails(breakage, message):
    runtime = yaml.safe_load(RUNTIME_YAML.read_text())
    breakage(runtime)
    with pytest.raises(DataError, match=message):
        validate_runtime(runtime)


BROKEN = [
    (lambda m: m["spec"]["trainer"].update(numNodes="two"),
     "spec.trainer.numNodes: 'two' is not of type 'integer'"),
    (lambda m: m["spec"]["trainer"].update(numNodes=-1),
     "spec.trainer.numNodes: -1 is less than the minimum of 0"),
    (lambda m: m["spec"]["trainer"]["resourcesPerNode"].update(limit={"cpu": "1"}),
     "spec.trainer.resourcesPerNode: Additional properties are not allowed ('limit' was "
     "unexpected)"),
    (lambda m: m["spec"].pop("runtimeRef"), "'runtimeRef' is a required property"),
    (lambda m: m["spec"].update(workers=2), "Additional properties are not allowed ('workers'"),
    (lambda m: _pod(m)["containers"][0].update(image="x"),
     "containers[0]: Additional properties are not allowed ('image' was unexpected)"),
    (lambda m: _pod(m)["containers"].append({"name": "sidecar"}),
     "container 'sidecar' does not exist in the runtime job 'node'"),
    (lambda m: _pod(m)["containers"][0].update(env=[{"name": "A", "value": "1"}]),
     "env of the 'node' container goes in spec.trainer.env"),
    (lambda m: m["spec"]["trainer"].update(env=[{"name": "JAX_PROCESS_ID", "value": "0"}]),
     "['JAX_PROCESS_ID'] are set by the JAX runtime"),
    (lambda m: m["spec"]["runtimePatches"][0].update(manager="mleops"),
     "manager: 'mleops' is not a domain-prefixed path"),
    (lambda m: m["metadata"].update(name="Fit_Latency"),
     "metadata.name: 'Fit_Latency' is not a DNS-1035 label"),
    (lambda m: m.update(kind="JAXJob"), "not trainer.kubeflow.org/v1alpha1/TrainJob"),
]


@pytest.mark.parametrize("breakage,message", BROKEN, ids=[m[:40] for _, m in BROKEN])
def test_a_broken_manifest_fails_with_the_field_named(breakage, message):
    m = _render()
    breakage(m)
    with pytest.raises(DataError) as e:
        validate_trainjob(m)
    assert message in str(e.value)


@pytest.mark.parametrize("kw,message", [
    (dict(num_nodes=0), "num_nodes must be an integer >= 1"),
    (dict(family="weibul"), "unknown family 'weibul'"),
    (dict(data_uri="s3://bucket/"), "neither an absolute path"),
    (dict(data_uri="pvc://Bad_Claim/x.csv"), "pvc://CLAIM/path"),
    (dict(memory="2 GB"), "is not a Kubernetes quantity"),
    (dict(runtime="Mleops JAX"), "is not a ClusterTrainingRuntime name"),
    (dict(colum="y"), "unknown fit options \\['colum'\\]"),
])
def test_bad_arguments_are_refused_before_rendering(kw, message):
    with pytest.raises(DataError, match=message):
        _render(**kw)


def test_long_names_leave_room_for_the_pod_host_name():
    # pods are <name>-node-0-<i>, host names at most 63 characters
    with pytest.raises(DataError, match="at most 53 characters"):
        render_trainjob("a" * 54, data_uri="/d.csv", family="gamma", num_nodes=12)
    validate_trainjob(render_trainjob("a" * 53, data_uri="/d.csv", family="gamma",
                                      num_nodes=12))


# --- start-up env ----------------------------------------------------------------------------
@pytest.fixture
def joined(monkeypatch):
    """Records jax.distributed.initialize's arguments instead of joining anything."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.config, "update", lambda *a: None)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    return calls


@pytest.mark.parametrize("env,args", [
    ({"JAX_COORDINATOR_ADDRESS": "fit-node-0-0.fit:29500", "JAX_NUM_PROCESSES": "4",
      "JAX_PROCESS_ID": "1"},
     {"coordinator_address": "fit-node-0-0.fit:29500", "num_processes": 4, "process_id": 1}),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.7", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     {"coordinator_address": "10.0.0.7:29500", "num_processes": 2, "process_id": 1}),
    ({"COORDINATOR_ADDRESS": "fit-worker-0", "COORDINATOR_PORT": "6666",
      "NUM_PROCESSES": "2", "PROCESS_ID": "1"},
     {"coordinator_address": "fit-worker-0:6666", "num_processes": 2, "process_id": 1}),
], ids=["trainer-v2", "v2-without-port", "jaxjob-v1"])
def test_either_launchers_env_joins_the_job(joined, env, args):
    assert sharded.initialize_distributed(env) == 1
    assert joined == [args]


def test_neither_env_is_a_no_op_unless_jax_detects_a_cluster(joined, monkeypatch):
    monkeypatch.setattr(sharded, "detected_cluster", lambda env: None)
    assert sharded.initialize_distributed({}) == 0 and joined == []
    monkeypatch.setattr(sharded, "detected_cluster", lambda env: "SlurmCluster")
    assert sharded.initialize_distributed({}) == 1 and joined == [{}]


def test_a_lone_kubernetes_pod_is_not_a_cluster():
    assert sharded.detected_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None


@pytest.mark.parametrize("env,message", [
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
     "$JAX_NUM_PROCESSES, $JAX_PROCESS_ID set but $JAX_COORDINATOR_ADDRESS missing"),
    ({"NUM_PROCESSES": "2"}, "but $COORDINATOR_ADDRESS, $COORDINATOR_PORT, $PROCESS_ID"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "$JAX_NUM_PROCESSES='two' must be an integer in 1.."),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     "$JAX_PROCESS_ID='2' must be an integer in 0..1"),
    ({"JAX_COORDINATOR_ADDRESS": "h:99999", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
     "$JAX_COORDINATOR_ADDRESS='99999' must be an integer in 1..65535"),
    ({"COORDINATOR_ADDRESS": "h", "COORDINATOR_PORT": "x", "NUM_PROCESSES": "2",
      "PROCESS_ID": "0"}, "$COORDINATOR_PORT='x' must be an integer"),
])
def test_a_half_set_or_invalid_env_is_one_clear_error(joined, env, message):
    with pytest.raises(DataError) as e:
        sharded.initialize_distributed(env)
    assert message in str(e.value) and "\n" not in str(e.value) and joined == []


# --- submit and wait -------------------------------------------------------------------------
def _job(*conditions):
    return {"status": {"conditions": [dict(type=t, status="True", reason=r, message=msg,
                                           lastTransitionTime="2025-01-01T00:00:00Z")
                                      for t, r, msg in conditions]}}


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_submit_and_wait_creates_then_polls_until_complete():
    m = _render()
    done = _job(("Complete", "AllJobsCompleted", "jobset completed"))
    api = RecordingApi(create_namespaced_custom_object=[m],
                       get_namespaced_custom_object=[{}, _job(), done])
    clock = _Clock()
    status = submit_and_wait(m, api=api, timeout_s=60, poll_s=5, clock=clock,
                             sleep=clock.sleep)
    assert status == done["status"]
    ref = dict(group="trainer.kubeflow.org", version="v1alpha1", namespace="models",
               plural="trainjobs")
    assert TRAINJOB.ref("models") == ref
    assert api.calls[0] == ("create_namespaced_custom_object",
                            dict(body=m, _request_timeout=30.0, **ref))
    assert api.calls[1:] == [("get_namespaced_custom_object",
                              dict(name="fit-latency", _request_timeout=30.0, **ref))] * 3
    assert clock.now == 10


def test_submit_and_wait_names_the_failed_condition():
    api = RecordingApi(create_namespaced_custom_object=[{}], get_namespaced_custom_object=[
        _job(("Failed", "DeadlineExceeded", "TrainJob exceeded its activeDeadlineSeconds"))])
    with pytest.raises(DeployError, match="TrainJob models/fit-latency failed "
                       r"\(DeadlineExceeded\): TrainJob exceeded its activeDeadlineSeconds"):
        submit_and_wait(_render(), api=api, timeout_s=60, poll_s=1)


def test_submit_and_wait_gives_up_at_the_timeout():
    suspended = _job(("Suspended", "Suspended", "queued"))
    api = RecordingApi(create_namespaced_custom_object=[{}],
                       get_namespaced_custom_object=[copy.deepcopy(suspended)] * 5)
    clock = _Clock()
    with pytest.raises(DeployError, match=r"did not finish within 30 s \(conditions: "
                       r"Suspended=True\)"):
        submit_and_wait(_render(), api=api, timeout_s=30, poll_s=10, clock=clock,
                        sleep=clock.sleep)
    assert len(api.calls) == 1 + 4 and clock.now == 30


def test_submit_and_wait_reports_a_refused_create():
    from kubernetes.client.exceptions import ApiException

    refused = ApiException(status=409, reason="Conflict")
    refused.body = json.dumps({"message": 'trainjobs "fit-latency" already exists'})
    api = RecordingApi(create_namespaced_custom_object=[refused])
    with pytest.raises(DeployError, match="creating TrainJob models/fit-latency failed: HTTP "
                       "409 Conflict: trainjobs \"fit-latency\" already exists"):
        submit_and_wait(_render(), api=api)


# --- CLI -------------------------------------------------------------------------------------
def test_the_cli_renders_a_valid_trainjob(tmp_path):
    from mleops.cli.main import main

    out = tmp_path / "job.yaml"
    result = CliRunner().invoke(main, [
        "deploy", "render-trainjob", "fit-latency", "--data", "pvc://datasets/latency.csv",
        "--family", "weibull", "--nodes", "3", "--column", "latency", "--covariates",
        "age,dose", "--result-path", "/tmp/result.json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    m = validate_trainjob(yaml.safe_load(out.read_text()))
    assert m["spec"]["trainer"]["numNodes"] == 3
    assert m["spec"]["trainer"]["args"] == [
        "fit", "/mnt/data/latency.csv", "--family", "weibull", "--column", "latency",
        "--covariates", "age,dose", "--output", "/tmp/result.json", "--distributed"]
    bad = CliRunner().invoke(main, ["deploy", "render-trainjob", "fit", "--data", "/d.csv",
                                    "--family", "weibul"])
    assert bad.exit_code == 2 and "unknown family 'weibul'" in bad.output


# --- the pods' program -----------------------------------------------------------------------
@pytest.mark.slow
def test_the_pods_command_runs_a_two_process_fit_with_the_trainer_env(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.weibull(1.7, 4001) * 2.5
    data = tmp_path / "latency.csv"
    data.write_text("latency\n" + "\n".join(repr(float(v)) for v in x) + "\n")
    m = render_trainjob("fit-latency", data_uri=str(data), family="weibull", num_nodes=2,
                        column="latency")
    t = m["spec"]["trainer"]
    assert t["command"] == ["mleops"]  # the console script, i.e. mleops.cli.main
    port = _free_port()
    procs = []
    for rank in range(2):  # what the Trainer's JAX policy gives each node pod
        env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(rank), "JAX_PLATFORMS": "cpu",
               "MLEOPS_JAX_CACHE": "off"}
        procs.append(subprocess.Popen([sys.executable, "-m", "mleops.cli.main", *t["args"],
                                       "--json"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-2000:]
    stdout0, stdout1 = results[0][0], results[1][0]
    got = json.loads(stdout0[stdout0.index("{"):])
    assert "{" not in stdout1  # only process 0 reports
    ref = mleops.fit(x, "weibull")
    for name, value in ref.params.items():
        assert got["params"][name] == pytest.approx(value, rel=1e-9)
    assert got["loglik"] == pytest.approx(ref.loglik, rel=1e-9)
