"""A fleet through a real MLflow server: one run holding the table, one registered version
with the fleet's digests, loaded back by alias, scored by key through mlflow.pyfunc, and
shown key by key by ``mleops models show --keys``."""

import json
import os
import subprocess
import sys
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest

import mleops
from mleops.errors import DataError
from mleops.fleet_artifact import FleetArtifact
from mleops.registry import Registry

pytestmark = pytest.mark.slow  # a real MLflow server
MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")


@pytest.fixture(scope="module")
def fleet():
    rng = np.random.default_rng(2)
    K = 25
    df = pd.DataFrame({"endpoint": np.repeat([f"/api/{i}" for i in range(K)], 200),
                       "latency": rng.gamma(2.0, np.repeat(rng.uniform(1, 3, K), 200))})
    return FleetArtifact.from_fleet(mleops.fit_fleet(df, "gamma", key="endpoint",
                                                     column="latency"))


def test_a_fleet_is_one_version_scored_by_key_through_pyfunc(fleet, mlflow_server,
                                                             monkeypatch):
    reg, name = Registry(mlflow_server), f"fleet-{uuid.uuid4().hex[:8]}"
    run = reg.log_fleet_run(experiment=name, params={"family": "gamma"}, metrics={},
                            fleet=fleet, registered=True)
    tags = reg.run_tags(run)
    assert tags["mleops.kind"] == "fleet"
    for k, v in fleet.digests().items():
        assert tags[k] == v
    version = reg.register(name, run, tags=fleet.digests())
    got_version, loaded = reg.load_fleet(name)  # the champion
    assert got_version == version and loaded.digests() == fleet.digests()
    np.testing.assert_array_equal(loaded.params, fleet.params)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    sig = model.metadata.get_input_schema().input_names()
    assert sig == ["endpoint", "x", "event"]
    frame = pd.DataFrame({"endpoint": ["/api/3", "/api/20", "/api/3"], "x": [1.0, 2.0, 9.0]})
    out = model.predict(frame)
    want = fleet.loglik_rows(frame.x.to_numpy(), [frame.endpoint.to_numpy()])
    np.testing.assert_allclose(out["loglik"].to_numpy(), want, rtol=1e-12)
    assert not out["pooled"].any()
    with pytest.raises(DataError, match="'/api/99' is not in this fleet"):
        model.predict(pd.DataFrame({"endpoint": ["/api/99"], "x": [1.0]}))
    with pytest.raises(Exception, match="endpoint"):  # the signature: the key column required
        model.predict(pd.DataFrame({"x": [1.0]}))

    out = subprocess.run([MLEOPS, "models", "show", name, "--keys", "--tracking-uri",
                          mlflow_server, "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["version"] == version and doc["aliases"] == ["champion"]
    assert len(doc["keys"]) == 25 and doc["keys"][0]["endpoint"] == "/api/0"
    assert set(doc["keys"][0]) >= {"shape", "scale", "se_shape", "n_obs", "status",
                                   "source_version"}
    text = subprocess.run([MLEOPS, "models", "show", name, "--keys", "--tracking-uri",
                           mlflow_server], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "/api/24" in text.stdout and "(this)" in text.stdout


def test_a_single_model_version_is_not_a_fleet(mlflow_server):
    from mleops.artifact import ModelArtifact
    from mleops.registry import RegistryError

    reg, name = Registry(mlflow_server), f"single-{uuid.uuid4().hex[:8]}"
    art = ModelArtifact.from_fit(mleops.fit(np.random.default_rng(0).gamma(2, 1, 300),
                                            "gamma"))
    reg.register(name, reg.log_training_run(experiment=name, params={}, metrics={},
                                            artifact=art), tags={})
    with pytest.raises(RegistryError, match="has no fleet table"):
        reg.load_fleet(name)
    assert reg.load_fleet(f"missing-{uuid.uuid4().hex[:6]}") is None
