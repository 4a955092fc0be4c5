"""`mleops monitor` on a fleet champion in a real MLflow registry: per-key CUSUMs, the keys
whose live rows drifted are the ones that alarm (BH across keys), exit 4, the state file
resumes; `--on-drift retrain` refits only those keys into one new version (the challenger),
every other key keeping the champion's parameters and lineage."""

import json
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest

import mleops
from mleops.fleet_artifact import FleetArtifact, key_labels
from mleops.registry import Registry

pytestmark = pytest.mark.slow
KEYS = [f"s{i:02d}" for i in range(30)]
DRIFTED = {"s04", "s11", "s23"}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mleops.cli.main", "monitor", *args],
                          capture_output=True, text=True, timeout=300)


def test_a_fleet_alarms_per_key_and_retrains_only_the_drifted_keys(mlflow_server, tmp_path):
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"store": np.repeat(KEYS, 400), "x": rng.gamma(2.0, 1.0, 400 * 30)})
    champion = FleetArtifact.from_fleet(mleops.fit_fleet(train, "gamma", key="store",
                                                         column="x"))
    reg, name = Registry(mlflow_server), f"fm-{uuid.uuid4().hex[:6]}"
    run = reg.log_fleet_run(experiment=name, params={}, metrics={}, fleet=champion,
                            registered=True)
    assert reg.register(name, run, tags=champion.digests()) == "1"
    keys = rng.choice(KEYS, 9000)
    live = pd.DataFrame({"store": keys, "x": rng.gamma(2.0, 1.0, keys.size)
                         * np.where(np.isin(keys, list(DRIFTED)), 2.5, 1.0)})
    live.to_csv(tmp_path / "live.csv", index=False)
    quiet = live[~live.store.isin(DRIFTED)]
    quiet.to_csv(tmp_path / "quiet.csv", index=False)
    common = ["--tracking-uri", mlflow_server, "--window", "20", "--json"]

    held = pd.DataFrame({"store": np.repeat(KEYS, 200), "x": rng.gamma(2.0, 1.0, 200 * 30)})
    held.to_csv(tmp_path / "held.csv", index=False)
    for extra in ([], ["--baseline-data", str(tmp_path / "held.csv")]):
        r = _cli(name, "--data", str(tmp_path / "quiet.csv"), *extra, *common)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        doc = json.loads(r.stdout)
        assert doc["alarmed_keys"] == [] and doc["keys_with_windows"] == 27
        assert ("held-out" in doc["baseline"]) == bool(extra), doc["baseline"]

    state = str(tmp_path / "state.json")
    halves = np.array_split(np.arange(len(live)), 2)
    for i, rows in enumerate(halves):
        live.iloc[rows].to_csv(tmp_path / f"part{i}.csv", index=False)
    r = _cli(name, "--data", str(tmp_path / "part0.csv"), "--state", state, *common)
    first = json.loads(r.stdout)
    r = _cli(name, "--data", str(tmp_path / "part1.csv"), "--state", state, "--on-drift",
             "retrain", *common)
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["rows"] == len(live) and first["rows"] == len(halves[0])  # resumed
    assert set(out["alarmed_keys"]) == DRIFTED, out["worst_keys"][:5]
    retrain = out["retrain"]
    assert retrain["registered_version"] == "2" and set(retrain["keys_retrained"]) == DRIFTED
    version, merged = reg.load_fleet(name, "2")
    assert reg.load_fleet(name)[0] == "1"  # the champion stays until gated or rolled out
    labels = key_labels(merged.keys).tolist()
    src = dict(zip(labels, merged.source_version.tolist()))
    assert {k for k, v in src.items() if v != "1"} == DRIFTED
    old = dict(zip(key_labels(champion.keys).tolist(), champion.row_params(
        np.arange(len(champion))).tolist()))
    new = dict(zip(labels, merged.row_params(np.arange(len(merged))).tolist()))
    for k in KEYS:
        assert (new[k] != old[k]) == (k in DRIFTED), k
