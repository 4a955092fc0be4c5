"""The compiled pipeline: committed YAML is current, round-trips, and carries what a cluster
needs (resources, accelerator, caching choices, both gate branches). Submission to a KFP host
is tested by contract: the exact client calls."""

import os

import pytest
import yaml

from mleops.cli import exits
from mleops.pipeline import runner
from mleops_pipelines import training


def test_committed_yaml_is_up_to_date(tmp_path):
    fresh = training.compile_yaml(str(tmp_path / "t.yaml"))
    with open(fresh) as f, open(training.YAML) as g:
        assert yaml.safe_load(f) == yaml.safe_load(g), "run `mleops pipeline compile`"


def test_yaml_round_trips_through_the_compiler(tmp_path):
    from kfp import compiler, components

    comp = components.load_component_from_file(training.YAML)
    out = tmp_path / "again.yaml"
    compiler.Compiler().compile(comp, str(out))
    a, b = yaml.safe_load(open(training.YAML)), yaml.safe_load(open(out))
    assert a["root"] == b["root"] and a["components"] == b["components"]
    assert a["deploymentSpec"] == b["deploymentSpec"]


def _spec():
    with open(training.YAML) as f:
        return yaml.safe_load(f)


def test_train_task_resources_and_accelerator_are_parameters():
    spec = _spec()
    execs = spec["deploymentSpec"]["executors"]
    res = execs["exec-train"]["container"]["resources"]
    assert "train_accelerator_type" in res["accelerator"]["resourceType"]
    assert "train_accelerator_limit" in res["accelerator"]["resourceCount"]
    assert "train_cpu" in res["resourceCpuRequest"]
    assert "train_memory" in res["resourceMemoryRequest"]
    for e in execs.values():
        assert e["container"]["image"].startswith("ghcr.io/mleops/mleops:")


def test_caching_follows_data_hashes_and_registry_steps_never_cache():
    spec = _spec()
    tasks = spec["root"]["dag"]["tasks"]
    caching = {n: t.get("cachingOptions", {}).get("enableCache", False) for n, t in tasks.items()}
    assert caching["evaluate"] is False  # reads the current champion
    assert caching["ingest"] and caching["split"] and caching["train"] and caching["gate"]
    ingest_inputs = tasks["ingest"]["inputs"]["parameters"]
    assert "data_hash" in ingest_inputs  # the cache key follows the file's content
    assert "validation_data_hash" in tasks["split"]["inputs"]["parameters"]
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    conds = sorted(t["triggerPolicy"]["condition"] for t in branches.values())
    assert any(c.startswith("!(") for c in conds) and len(conds) == 2


class RecordingClient:
    def __init__(self):
        self.calls = []

    def create_run_from_pipeline_package(self, *args, **kwargs):
        self.calls.append((args, kwargs))

        class Run:
            run_id = "kfp-run-123"

        return Run()


def test_submit_to_host_makes_exactly_one_create_run_call(tmp_path, monkeypatch):
    data = tmp_path / "d.csv"
    data.write_text("latency\n" + "\n".join(str(1 + i % 7) for i in range(50)) + "\n")
    made = []
    rec = RecordingClient()

    def fake_client(host):
        made.append(host)
        return rec

    import kfp

    monkeypatch.setattr(kfp, "Client", fake_client)
    req = runner.RunRequest(data_uri=str(data), family="gamma", model_name="m",
                            tracking_uri="http://mlflow.example:5000")
    out = runner.run_pipeline(req, host="http://kfp.example:8888", enable_caching=False)
    assert made == ["http://kfp.example:8888"]
    assert out == {"submitted": True, "kfp_run_id": "kfp-run-123", "run_tag": out["run_tag"],
                   "host": "http://kfp.example:8888"}
    (args, kwargs), = rec.calls
    assert args == (training.YAML,)
    assert kwargs["experiment_name"] == "m" and kwargs["enable_caching"] is False
    assert kwargs["run_name"] == f"m-{out['run_tag'][:8]}"
    a = kwargs["arguments"]
    assert a["data_uri"] == str(data) and a["tracking_uri"] == "http://mlflow.example:5000"
    assert a["run_tag"] == out["run_tag"] and a["family"] == "gamma"
    assert exits.for_pipeline(out) == 0


def test_submit_validates_before_calling_the_host(tmp_path, monkeypatch):
    import kfp

    from mleops.errors import DataError

    monkeypatch.setattr(kfp, "Client", lambda host: pytest.fail("must not be called"))
    req = runner.RunRequest(data_uri=str(tmp_path / "none.csv"), family="gamma", model_name="m")
    with pytest.raises(DataError, match="not found"):
        runner.run_pipeline(req, host="http://kfp.example:8888")
    assert not os.path.exists(tmp_path / "none.csv")
