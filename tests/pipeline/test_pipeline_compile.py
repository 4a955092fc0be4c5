"""The compiled pipeline: committed YAML is current, round-trips, and carries what a cluster
needs (resources, accelerator, caching choices, both gate branches). Submission to a KFP host
is tested against a KFP API stub (``test_pipeline_host.py``)."""

import yaml

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


def _tasks(spec):
    """Every task of the pipeline, the gate branches' included, by name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for name, comp in spec["components"].items():
        if name.startswith("comp-condition"):
            tasks.update(comp["dag"]["tasks"])
    return tasks


def test_only_data_and_training_steps_cache_and_their_keys_hold_the_code():
    spec = _spec()
    tasks = _tasks(spec)
    caching = {n: t.get("cachingOptions", {}).get("enableCache", False) for n, t in tasks.items()
               if "componentRef" in t and not n.startswith("condition")}
    assert caching == {"ingest": True, "split": True, "train": True, "evaluate": False,
                       "gate": False, "record": False, "record-2": False, "deploy": False}
    for name in ("ingest", "split", "train"):  # the library's code is part of their keys
        params = tasks[name]["inputs"]["parameters"]
        assert params["code_version"] == {"componentInputParameter": "code_version"}
    assert "data_hash" in tasks["ingest"]["inputs"]["parameters"]
    assert "validation_data_hash" in tasks["split"]["inputs"]["parameters"]
    for name in ("record", "record-2"):
        assert {"git_commit", "code_version", "candidate_key"} <= set(
            tasks[name]["inputs"]["parameters"])
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    conds = sorted(t["triggerPolicy"]["condition"] for t in branches.values())
    assert any(c.startswith("!(") for c in conds) and len(conds) == 2


def test_code_version_follows_every_source_file_and_the_image(tmp_path, monkeypatch):
    import sys

    from mleops import __version__
    from mleops.pipeline import provenance

    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "steps.py").write_text("def train(): return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fakepkg", None)
    before = provenance.code_hash(("fakepkg",))
    (pkg / "sub" / "steps.py").write_text("def train(): return 2\n")
    assert provenance.code_hash(("fakepkg",)) != before
    (pkg / "sub" / "steps.py").write_text("def train(): return 1\n")
    assert provenance.code_hash(("fakepkg",)) == before
    monkeypatch.delenv(provenance.IMAGE_DIGEST_ENV, raising=False)
    v = provenance.code_version()
    assert v.startswith(f"{__version__}+") and len(v) == len(__version__) + 13
    monkeypatch.setenv(provenance.IMAGE_DIGEST_ENV, "sha256:" + "a" * 64)
    assert provenance.code_version() == f"{v}@sha256:{'a' * 64}"


def test_git_commit_comes_from_the_cli_side(tmp_path, monkeypatch):
    from mleops.pipeline import provenance

    for k in (provenance.GIT_COMMIT_ENV, *provenance.CI_COMMIT_ENVS):
        monkeypatch.delenv(k, raising=False)
    assert provenance.git_commit(str(tmp_path)) == ""  # no checkout, no CI: unknown, not a guess
    monkeypatch.setenv("GITHUB_SHA", "f" * 40)
    assert provenance.git_commit(str(tmp_path)) == "f" * 40
    monkeypatch.setenv(provenance.GIT_COMMIT_ENV, "c" * 40)
    assert provenance.git_commit(str(tmp_path)) == "c" * 40


def test_deploy_target_and_trainjob_settings_are_pipeline_parameters():
    spec = _spec()
    params = spec["root"]["inputDefinitions"]["parameters"]
    defaults = {n: params[n].get("defaultValue") for n in (
        "deploy_target", "deploy_mode", "trainjob_min_bytes", "trainjob_result_uri",
        "trainjob_nodes")}
    assert defaults == {"deploy_target": "seldon", "deploy_mode": "Serverless",
                        "trainjob_min_bytes": 0.0, "trainjob_result_uri": "",
                        "trainjob_nodes": 2.0}
    tasks = _tasks(spec)
    # inside the gate branch a pipeline parameter reaches a task as pipelinechannel--NAME
    given = lambda task, name: tasks[task]["inputs"]["parameters"][name][  # noqa: E731
        "componentInputParameter"].removeprefix("pipelinechannel--")
    assert given("deploy", "target") == "deploy_target"
    assert given("deploy", "deployment_mode") == "deploy_mode"
    assert given("train", "trainjob_min_bytes") == "trainjob_min_bytes"
    assert given("train", "node_memory") == "train_memory"
