"""Serving and rollouts on the stack infra/k8s deploys: PostgreSQL-backed MLflow with its
artifacts in S3 (a real S3 API on 127.0.0.1). `mleops serve` loads models:/NAME@champion
through it, and a canary rollout, whose data plane stages every version from it, rolls a
worse candidate back and promotes a good one."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

import mleops
from mleops.artifact import ModelArtifact
from mleops.registry.registry import Registry
from mleops.serving.client import predict
from mleops.serving.process import free_port

# one PostgreSQL + S3 + MLflow stack per test session: both modules on the same xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow_production")]
MLEOPS = [sys.executable, "-m", "mleops.cli.main"]
FAST = ["--steps", "10,50,100", "--step-min-rows", "100", "--min-drop", "0.1",
        "--interval", "0.3"]


@pytest.fixture(scope="module")
def stack(mlflow_production, tmp_path_factory):  # noqa: F811
    uri, control = mlflow_production
    env = {**os.environ, **control["env"]}
    saved = {k: os.environ.get(k) for k in control["env"]}
    os.environ.update(control["env"])  # this process writes artifacts to S3 itself
    try:
        reg = Registry(uri, retries=3, backoff=0.2)
        rng = np.random.default_rng(7)
        name = f"prod-{uuid.uuid4().hex[:8]}"
        arts = {}
        for key, mu in (("good1", 0.0), ("good2", 0.0), ("bad", 0.6)):
            arts[key] = ModelArtifact.from_fit(mleops.fit(rng.lognormal(mu, 0.5, 3000),
                                                          "lognorm"))
            run = reg.log_training_run(experiment="prod-stack", params={"key": key},
                                       metrics={}, artifact=arts[key])
            reg.register(name, run, tags={})
        live = tmp_path_factory.mktemp("live") / "live.csv"
        x = np.random.default_rng(99).lognormal(0.0, 0.5, 4000)
        live.write_text("x\n" + "\n".join(f"{v:.6f}" for v in x) + "\n")
        yield {"uri": uri, "env": env, "name": name, "arts": arts, "live": str(live),
               "registry": reg}
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_serve_loads_the_champion_from_postgres_and_s3(stack):
    port = free_port()
    proc = subprocess.Popen([*MLEOPS, "serve", "--protocol", "v1", "--model-uri", f"models:/{stack['name']}@champion",
                             "--tracking-uri", stack["uri"], "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=stack["env"], start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        x = np.array([0.5, 1.0, 2.0])
        deadline = time.time() + 120
        while True:
            try:
                status, body = predict(url, {"data": {"ndarray": x[:, None].tolist()}})
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
                time.sleep(0.5)
        assert status == 200, body
        got = np.asarray(body["data"]["ndarray"], float).ravel()
        np.testing.assert_allclose(got, stack["arts"]["good1"].loglik_rows(x), rtol=1e-9)
        tags = body["meta"]["tags"]
        assert (tags["model_name"], tags["model_version"]) == (stack["name"], "1")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _rollout(stack, version, tmp_path):
    return subprocess.run([*MLEOPS, "rollout", "start", stack["name"], "--candidate-version",
                           version, "--tracking-uri", stack["uri"], "--state-dir",
                           str(tmp_path), "--replay", stack["live"], "--rate", "50", *FAST,
                           "--json"], capture_output=True, text=True, timeout=600,
                          env=stack["env"])


def test_a_rollout_on_the_production_stack_rolls_back_then_promotes(stack, tmp_path):
    reg, name = stack["registry"], stack["name"]
    bad = _rollout(stack, "3", tmp_path / "bad")
    assert bad.returncode == 3, bad.stdout[-2000:] + bad.stderr[-2000:]
    assert json.loads(bad.stdout[bad.stdout.index("{"):])["phase"] == "rolled_back"
    assert reg.champion(name)[0] == "1"
    good = _rollout(stack, "2", tmp_path / "good")
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    assert json.loads(good.stdout[good.stdout.index("{"):])["phase"] == "promoted"
    assert reg.champion(name)[0] == "2"
    tags = {v["version"]: v["tags"] for v in reg.list_versions(name)}
    assert tags["3"]["mleops.rollout"] == "rolled_back" and tags["2"]["mleops.rollout"] == \
        "promoted"
