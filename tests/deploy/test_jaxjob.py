"""JAXJob manifests checked against the real CRD and the operator's rules, and the pods'
program run for real: two local processes joined by jax.distributed, as the operator would
start them, give the single-process fit."""

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mleops
from mleops.deploy.jaxjob import (
    CONTAINER,
    PORT_NAME,
    default_crd_path,
    fit_args,
    render_jaxjob,
    validate_jaxjob,
)
from mleops.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def _render(**kw):
    args = dict(data_uri="s3://data/latency.parquet", family="weibull", workers=4,
                column="latency", censor_column="observed")
    return render_jaxjob("fit-latency", **{**args, **kw})


def _worker(manifest: dict) -> dict:
    return manifest["spec"]["jaxReplicaSpecs"]["Worker"]


def _container(manifest: dict) -> dict:
    return _worker(manifest)["template"]["spec"]["containers"][0]


def test_crd_is_vendored_verbatim():
    """The package carries the real CRD (mleops/deploy/crds/), so validation never depends on ../shared."""
    vendored = REPO / "src" / "mleops" / "deploy" / "crds" / "jaxjob-crd.yaml"
    assert vendored.is_file() and default_crd_path().is_file()
    shared = REPO.parent / "shared" / "schemas" / "jaxjob-crd.yaml"
    if shared.is_file():
        assert shared.read_bytes() == vendored.read_bytes()


@pytest.mark.parametrize("data_uri,path", [
    ("s3://data/latency.parquet", "/mnt/data/latency.parquet"),
    ("pvc://datasets/claims/2024.csv", "/mnt/data/claims/2024.csv"),
    ("/opt/data/latency.csv", "/opt/data/latency.csv"),
])
def test_renders_validate_and_the_data_reaches_the_command(data_uri, path):
    m = _render(data_uri=data_uri, env_secret_ref_name="seldon-rclone", gpus=1,
                active_deadline_seconds=3600)
    assert validate_jaxjob(m) is m
    c = _container(m)
    assert c["name"] == CONTAINER and c["ports"][0]["name"] == PORT_NAME
    assert c["command"] == ["mleops"] and c["args"][-1] == "--distributed"
    assert c["args"][:4] == ["fit", path, "--family", "weibull"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert _worker(m)["replicas"] == 4
    assert m["spec"]["runPolicy"]["activeDeadlineSeconds"] == 3600
    inits = _worker(m)["template"]["spec"]["initContainers"]
    if data_uri.startswith("s3://"):
        assert inits[0]["args"] == [data_uri, "/mnt/data"]
        assert inits[0]["envFrom"] == [{"secretRef": {"name": "seldon-rclone"}}]
    else:
        assert inits == []


def test_fit_args_mirror_mleops_fit_options():
    args = fit_args("/d.csv", "poisson_glm", column="y", covariates=["age", "dose"],
                    threshold=None, k=None, method="newton")
    assert args == ["fit", "/d.csv", "--family", "poisson_glm", "--column", "y",
                    "--covariates", "age,dose", "--method", "newton", "--distributed"]
    # every flag the manifest passes is one `mleops fit` takes
    from mleops.cli.main import fit_cmd
    from mleops.deploy.jaxjob import FIT_FLAGS

    flags = {o for p in fit_cmd.params for o in p.opts}
    assert set(FIT_FLAGS.values()) | {"--distributed"} <= flags
    with pytest.raises(DataError, match="unknown fit options \\['colum'\\]"):
        fit_args("/d.csv", "gamma", colum="y")


BROKEN = [
    (lambda m: _worker(m).update(replicas="two"),
     "spec.jaxReplicaSpecs.Worker.replicas: 'two' is not of type 'integer'"),
    (lambda m: _container(m).update(imagePullPolicy=None),
     "spec.jaxReplicaSpecs.Worker.template.spec.containers[0].imagePullPolicy: None is not "
     "of type 'string'"),
    (lambda m: _container(m)["resources"].update(limit={"cpu": "1"}),
     "spec.jaxReplicaSpecs.Worker.template.spec.containers[0].resources: Additional "
     "properties are not allowed ('limit' was unexpected)"),
    (lambda m: m["spec"]["runPolicy"].update(backoffLimit=-0.5),
     "spec.runPolicy.backoffLimit: -0.5 is not of type 'integer'"),
    (lambda m: m["spec"]["jaxReplicaSpecs"].update(Master=copy.deepcopy(_worker(m))),
     "spec.jaxReplicaSpecs.Master: unsupported replica type, only 'Worker'"),
    (lambda m: _container(m).update(name="main"),
     "needs a container named 'jax'"),
    (lambda m: _container(m).update(image=""),
     "spec.jaxReplicaSpecs.Worker.template.spec.containers[0].image: required"),
    (lambda m: _worker(m).update(restartPolicy="Sometimes"),
     "spec.jaxReplicaSpecs.Worker.restartPolicy: 'Sometimes' is not one of"),
    (lambda m: m["metadata"].update(name="Fit_Latency"),
     "metadata.name: 'Fit_Latency' is not a DNS-1035 label"),
    (lambda m: m.update(kind="PyTorchJob"), "not kubeflow.org/v1/JAXJob"),
]


@pytest.mark.parametrize("breakage,message", BROKEN, ids=[m[:40] for _, m in BROKEN])
def test_a_broken_manifest_fails_with_the_field_named(breakage, message):
    m = _render()
    breakage(m)
    with pytest.raises(DataError) as e:
        validate_jaxjob(m)
    assert message in str(e.value)


@pytest.mark.parametrize("kw,message", [
    (dict(workers=0), "workers must be an integer >= 1"),
    (dict(family="weibul"), "unknown family 'weibul'"),
    (dict(data_uri="s3://bucket/"), "neither an absolute path"),
    (dict(data_uri="pvc://Bad_Claim/x.csv"), "pvc://CLAIM/path"),
    (dict(memory="2 GB"), "is not a Kubernetes quantity"),
])
def test_bad_arguments_are_refused_before_rendering(kw, message):
    with pytest.raises(DataError, match=message):
        _render(**kw)


def test_long_names_leave_room_for_the_pod_suffix():
    with pytest.raises(DataError, match="at most 53 characters"):
        render_jaxjob("a" * 54, data_uri="/d.csv", family="gamma", workers=12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_pods_command_runs_a_two_process_distributed_fit(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.gamma(2.0, 1.5, 4001)
    data = tmp_path / "latency.csv"
    data.write_text("latency\n" + "\n".join(repr(float(v)) for v in x) + "\n")
    out = tmp_path / "out" / "result.json"
    m = render_jaxjob("fit-latency", data_uri=str(data), family="gamma", workers=2,
                      column="latency", output=str(out))
    c = _container(m)
    port = _free_port()
    procs = []
    for rank in range(2):  # the environment the training operator gives each worker pod
        env = {**os.environ, "COORDINATOR_ADDRESS": "127.0.0.1", "COORDINATOR_PORT": str(port),
               "NUM_PROCESSES": "2", "PROCESS_ID": str(rank), "JAX_PLATFORMS": "cpu",
               "MLEOPS_JAX_CACHE": "off"}
        # c["command"] is the `mleops` console script, i.e. mleops.cli.main
        assert c["command"] == ["mleops"]
        procs.append(subprocess.Popen([sys.executable, "-m", "mleops.cli.main", *c["args"]], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=180) for p in procs]
    for p, (_, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-2000:]
    got = json.loads(out.read_text())
    # Only process 0 reports (gloo itself prints a connection line on both).
    stdout0, stdout1 = results[0][0], results[1][0]
    assert json.loads(stdout0[stdout0.index("{"):]) == got and "{" not in stdout1
    ref = mleops.fit(x, "gamma")
    for name, value in ref.params.items():
        assert got["params"][name] == pytest.approx(value, rel=1e-6)
    assert got["loglik"] == pytest.approx(ref.loglik, rel=1e-9)
