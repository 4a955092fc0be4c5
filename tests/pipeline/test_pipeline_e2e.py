"""End to end: the real ``mleops`` CLI runs the compiled KFP pipeline with the kfp local
runner against a real MLflow server. Both gate branches (register / log-rejected) run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")
pytestmark = pytest.mark.slow


def cli(*args, cwd):
    out = subprocess.run([MLEOPS, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                         env={**os.environ, "MLEOPS_JAX_CACHE": "off"})
    return out


def write(path, x):
    np.savetxt(path, x, header="latency", comments="", fmt="%.10g")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(2024)
    truth = lambda n: rng.gamma(2.0, 1.5, n)  # noqa: E731
    first = truth(3000)
    biased = truth(6000)
    biased = biased[biased < np.quantile(biased, 0.9)]  # a lossy collector drops the tail
    return {"dir": d, "validation": write(d / "validation.csv", truth(5000)),
            "first": write(d / "first.csv", first), "biased": write(d / "biased.csv", biased),
            "more": write(d / "more.csv", truth(20000))}


def run(data, mlflow_server, which, family="gamma"):  # noqa: F811
    out = cli("pipeline", "run", "--data", data[which], "--family", family, "--model-name",
              "latency", "--validation-data", data["validation"], "--tracking-uri",
              mlflow_server, "--pipeline-root", str(data["dir"] / "root"), "--json",
              "--artifacts-destination", "s3://mlops-bucket/mlartifacts", cwd=data["dir"])
    return out


def latest_manifest(data):
    """The SeldonDeployment the newest run's deploy step rendered (None if it did not run)."""
    import yaml

    root = data["dir"] / "root"
    run = max((p for p in root.iterdir() if p.name.startswith("mleops-training")),
              key=lambda p: p.stat().st_mtime)
    path = run / "deploy" / "manifest"
    return yaml.safe_load(path.read_text()) if path.exists() else None  # "# not ..." -> None


def traffic(manifest):
    return {p["labels"]["mleops.io/version"]: p["traffic"] for p in manifest["spec"]["predictors"]}


def versions(mlflow_server):  # noqa: F811
    import mlflow

    c = mlflow.MlflowClient(mlflow_server)
    return {mv.version: c.get_model_version("latency", mv.version).aliases
            for mv in c.search_model_versions("name = 'latency'")}


def test_champion_then_gate_rejections_then_challenger_promote_rollback(data, mlflow_server):  # noqa: F811
    first = run(data, mlflow_server, "first")
    assert first.returncode == 0, first.stderr[-3000:]
    s = json.loads(first.stdout)
    assert s["registered_version"] == "1" and s["gate"]["passed"]
    assert s["gate"]["stats"]["has_champion"] is False
    assert versions(mlflow_server) == {"1": ["champion"]}
    assert traffic(latest_manifest(data)) == {"1": 100}

    biased = run(data, mlflow_server, "biased")
    assert biased.returncode == 3, biased.stderr[-3000:]
    s = json.loads(biased.stdout)
    assert s["registered_version"] is None and not s["gate"]["passed"]
    assert s["gate"]["stats"]["has_champion"] and s["gate"]["stats"]["mean_diff"] < 0
    assert s["gate"]["stats"]["lower_bound"] < -0.002
    assert s["run_id"]  # rejected candidates are logged ...
    assert versions(mlflow_server) == {"1": ["champion"]}  # ... never registered
    assert latest_manifest(data) is None  # ... and never deployed

    wrong = run(data, mlflow_server, "more", family="exponential")
    assert wrong.returncode == 3, wrong.stderr[-3000:]
    assert versions(mlflow_server) == {"1": ["champion"]}

    more = run(data, mlflow_server, "more")
    assert more.returncode == 0, more.stderr[-3000:]
    s = json.loads(more.stdout)
    assert s["registered_version"] == "2" and s["gate"]["stats"]["has_champion"]
    assert versions(mlflow_server) == {"1": ["champion"], "2": ["challenger"]}
    m = latest_manifest(data)
    assert traffic(m) == {"1": 90, "2": 10}  # the challenger goes out as a 10% canary
    uri = m["spec"]["predictors"][1]["graph"]["modelUri"]
    assert uri.startswith("s3://mlops-bucket/mlartifacts/")

    out = cli("models", "promote", "latency", "--version", "2", "--tracking-uri",
              mlflow_server, cwd=data["dir"])
    assert out.returncode == 0, out.stderr
    assert versions(mlflow_server)["2"] == ["champion"]
    out = cli("models", "rollback", "latency", "--tracking-uri", mlflow_server, cwd=data["dir"])
    assert out.returncode == 0, out.stderr
    assert versions(mlflow_server)["1"] == ["champion"]
    listed = cli("models", "list", "latency", "--tracking-uri", mlflow_server, "--json",
                 cwd=data["dir"])
    rows = json.loads(listed.stdout)
    assert [r["version"] for r in rows] == ["1", "2"]
    assert rows[1]["tags"]["mleops.data_hash"]


def test_bad_input_exits_2_and_touches_nothing(data, mlflow_server, tmp_path):  # noqa: F811
    before = versions(mlflow_server)
    missing = cli("pipeline", "run", "--data", str(tmp_path / "nope.csv"), "--family", "gamma",
                  "--model-name", "latency", "--tracking-uri", mlflow_server, cwd=tmp_path)
    assert missing.returncode == 2 and "data not found" in missing.stderr
    col = cli("pipeline", "run", "--data", data["first"], "--family", "gamma", "--column", "x",
              "--model-name", "latency", "--tracking-uri", mlflow_server, cwd=tmp_path)
    assert col.returncode == 2 and "column 'x' not found" in col.stderr
    few = tmp_path / "few.csv"
    few.write_text("latency\n1.0\n2.0\n3.0\n")
    out = cli("pipeline", "run", "--data", str(few), "--family", "gamma", "--model-name",
              "latency", "--tracking-uri", mlflow_server, cwd=tmp_path)
    assert out.returncode == 2 and "too few rows to split" in out.stderr
    assert versions(mlflow_server) == before


def test_a_failed_task_is_the_last_line_and_the_json(data, mlflow_server, tmp_path):  # noqa: F811
    """A task's own error (not kfp's "Inner task failed" wrapper) is stderr's last line and
    the JSON on stdout; the exit code follows it (a DataError in the train task: 2)."""
    flat = tmp_path / "flat.csv"
    flat.write_text("latency\n" + "2.0\n" * 400)  # every value equal: the gamma MLE does not exist
    before = versions(mlflow_server)
    out = cli("pipeline", "run", "--data", str(flat), "--family", "gamma", "--model-name",
              "latency", "--tracking-uri", mlflow_server, "--json", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("task 'train' failed: DataError: all ") and \
        "values equal 2.0" in last, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert (doc["task"], doc["cause"], doc["exit_code"]) == ("train", "DataError", 2), doc
    assert doc["error"] == last and "Inner task failed" in doc["detail"]
    assert versions(mlflow_server) == before


def test_unreachable_tracking_server_fails_cleanly(data, tmp_path):
    from support.mlflow_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    out = cli("models", "list", "latency", "--tracking-uri", dead, cwd=tmp_path)
    assert out.returncode == 1 and "unreachable" in out.stderr and dead in out.stderr
    out = cli("pipeline", "run", "--data", data["first"], "--family", "gamma", "--model-name",
              "latency", "--tracking-uri", dead, "--pipeline-root", str(tmp_path / "r"),
              cwd=tmp_path)
    assert out.returncode == 1 and "unreachable" in out.stderr
    assert not (tmp_path / "r").exists()  # failed before any task ran


def test_cache_reuses_steps_for_the_same_data_and_can_be_turned_off(data, mlflow_server):  # noqa: F811
    """A cached task reuses earlier outputs, so it leaves no directory in the new run. The same
    candidate for the same model is a duplicate (exit 5, nothing run); for another model the
    data and training steps come from the cache and the registry steps run."""
    root = data["dir"] / "cache-root"

    def go(model, *extra, code=0):
        before = set(os.listdir(root)) if root.exists() else set()
        out = cli("pipeline", "run", "--data", data["first"], "--family", "gamma",
                  "--model-name", model, "--validation-data", data["validation"],
                  "--tracking-uri", mlflow_server, "--pipeline-root", str(root), "--json",
                  *extra, cwd=data["dir"])
        assert out.returncode == code, out.stderr[-3000:]
        if code:
            assert set(os.listdir(root)) == before  # refused before any task ran
            return json.loads(out.stdout)
        (run_dir,) = set(os.listdir(root)) - before - {".kfp_cache"}
        return set(os.listdir(root / run_dir))

    first = go("latency-cache")
    assert {"ingest", "split", "train", "evaluate", "gate"} <= first
    dup = go("latency-cache", "--gate-tolerance", "0.5", code=5)  # gate settings: same model
    assert dup["duplicate_of"] == "1" and dup["registered_version"] is None
    second = go("latency-cache-b")
    assert not {"ingest", "split", "train"} & second  # reused
    assert {"evaluate", "gate"} <= second  # evaluate reads the registry: never cached
    # a streamed train step (a budget below the table's size) gives the same model
    assert {"ingest", "split", "train"} <= go("latency-cache-c", "--no-cache",
                                               "--train-max-memory", "100KB")
    runs = sorted(p for p in root.iterdir() if p.name.startswith("mleops-training"))
    cached, streamed = (json.loads(next((r / "train").rglob("model.json")).read_text())
                        for r in runs if (r / "train").is_dir())  # the first run, the last
    assert streamed["metadata"]["streamed"]["batch_rows"] < streamed["n_obs"]
    assert "streamed" not in cached["metadata"] and streamed["n_obs"] == cached["n_obs"]
    for name, v in cached["params"].items():
        assert streamed["params"][name] == pytest.approx(v, rel=1e-9)
    # No artifact store address was given: the version is registered, the manifest explains
    # why it was not rendered (a remote tracking server proxies the artifacts).
    assert "not rendered" in (runs[-1] / "deploy" / "manifest").read_text()
