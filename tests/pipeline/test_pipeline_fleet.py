"""A fleet through the real pipeline (kfp local runner, real MLflow server): the first run
registers every key; a second, whose data drifted on 4 of 30 keys, is gated key by key and
registered as a merge: those 4 keep the first version's parameters, the rest move."""

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest

from mleops.registry import Registry

pytestmark = pytest.mark.slow
MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")
K, N = 30, 600
DRIFTED = [f"/ep/{i}" for i in range(4)]


def _write(path, rng, scale):
    keys = np.repeat([f"/ep/{i}" for i in range(K)], N)
    pd.DataFrame({"endpoint": keys, "latency_ms": rng.gamma(2.0, np.repeat(scale, N)),
                  "observed": (rng.uniform(size=K * N) > 0.2).astype(int)}).to_parquet(path)
    return str(path)


def test_a_fleet_is_gated_key_by_key_and_registered_as_a_merge(mlflow_server, tmp_path):
    rng = np.random.default_rng(0)
    scale = rng.uniform(1.0, 3.0, K)
    drift = np.where(np.arange(K) < len(DRIFTED), 1.7, 1.0)
    valid = _write(tmp_path / "valid.parquet", rng, scale)
    name = f"fleet-{uuid.uuid4().hex[:8]}"

    def run(data):
        return subprocess.run(
            [MLEOPS, "pipeline", "run", "--data", data, "--key-column", "endpoint", "--family",
             "weibull", "--column", "latency_ms", "--censor-column", "observed",
             "--model-name", name, "--validation-data", valid, "--tracking-uri",
             mlflow_server, "--pipeline-root", str(tmp_path / "root"), "--json"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, "MLEOPS_JAX_CACHE": "off"})

    first = run(_write(tmp_path / "v1.parquet", rng, scale))
    assert first.returncode == 0, first.stderr[-3000:]
    one = json.loads(first.stdout)
    assert one["registered_version"] == "1" and one["gate"]["counts"]["new_keys"] == K
    second = run(_write(tmp_path / "v2.parquet", rng, scale * drift))
    assert second.returncode == 0, second.stderr[-3000:]
    two = json.loads(second.stdout)
    gate = two["gate"]
    assert gate["fleet"] and gate["champion_version"] == "1"
    assert sorted(gate["discoveries"]) == DRIFTED, gate["discoveries"]
    assert gate["counts"]["take_champion"] == len(DRIFTED)

    reg = Registry(mlflow_server)
    _, v1 = reg.load_fleet(name, "1")
    version, v2 = reg.load_fleet(name, two["registered_version"])
    assert version == "2" and len(v2) == K
    tags = {v["version"]: v["tags"] for v in reg.list_versions(name)}["2"]
    assert tags["mleops.fleet.parent_champion"] == "1"
    assert tags["mleops.fleet.key_count"] == str(K)
    row1 = {k[0]: i for i, k in enumerate(v1.key_tuples())}
    for i, (key,) in enumerate(v2.key_tuples()):
        if key in DRIFTED:  # kept: the first version's parameters and lineage
            assert v2.source_version[i] == "1"
            np.testing.assert_array_equal(v2.params[i], v1.params[row1[key]])
        else:
            assert v2.source_version[i] == ""
            assert not np.array_equal(v2.params[i], v1.params[row1[key]])
