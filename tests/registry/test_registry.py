"""Registry layer against a real ``mlflow server`` (sqlite + proxied artifacts), no mocks."""

import json
import os
import time
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from support.mlflow_server import free_port

import mleops
from mleops.artifact import ModelArtifact
from mleops.errors import DataError
from mleops.registry.lock import LOCK_TAG
from mleops.registry.pyfunc import predict_frame
from mleops.registry.registry import (
    ALIAS_TAG,
    HISTORY_TAG,
    PENDING_TAG,
    ROLLBACK_TAG,
    Registry,
    RegistryError,
)

pytestmark = pytest.mark.slow


def _artifact(seed: int) -> ModelArtifact:
    res = mleops.fit(np.random.default_rng(seed).gamma(2, 1.5, 500), "gamma")
    return ModelArtifact.from_fit(res, data_hash=f"hash-{seed}")


@pytest.fixture(scope="module")
def registry(mlflow_server):  # noqa: F811
    return Registry(mlflow_server, retries=2, backoff=0.1)


@pytest.fixture(scope="module")
def runs(registry, tmp_path_factory):
    """Two logged training runs (artifact, run id), shared by the tests below."""
    report = tmp_path_factory.mktemp("report")
    (report / "summary.md").write_text("# fit report\n")
    out = []
    for seed in (0, 1):
        art = _artifact(seed)
        run_id = registry.log_training_run(
            experiment="mleops-tests", params={"family": "gamma", "seed": seed},
            metrics={"loglik": art.loglik, "aic": float("nan"), "n_obs": art.n_obs},
            artifact=art, report_dir=str(report), tags={"mleops.data_hash": f"hash-{seed}"})
        out.append((art, run_id))
    return out


def _name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def _aliases(registry, name):
    return {v["version"]: v["aliases"] for v in registry.list_versions(name)}


LINEAGE = {"pipeline_run": "kfp-123", "data_hash": "hash-0", "git_commit": "abc1234"}


def test_training_run_is_recorded(registry, runs):
    art, run_id = runs[0]
    run = registry.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"family": "gamma", "seed": "0"}
    assert set(run.data.metrics) == {"loglik", "n_obs"}  # NaN aic skipped ...
    assert run.data.tags["mleops.skipped_metrics"] == "aic"  # ... and named
    assert run.data.tags["mleops.data_hash"] == "hash-0"
    assert run.data.tags["mleops.registered"] == "false"
    paths = {a.path for a in registry.client.list_artifacts(run_id)}
    assert {"model.json", "report"} <= paths
    assert [a.path for a in registry.client.list_artifacts(run_id, "report")] == ["report/summary.md"]


def test_champion_challenger_promote_rollback(registry, runs):
    name = _name()
    assert registry.champion(name) is None  # no such model
    v1 = registry.register(name, runs[0][1], tags=LINEAGE)
    v2 = registry.register(name, runs[1][1], tags={**LINEAGE, "data_hash": "hash-1"})
    assert (v1, v2) == ("1", "2")
    assert _aliases(registry, name) == {"1": ["champion"], "2": ["challenger"]}
    versions = registry.list_versions(name)
    assert versions[0]["tags"] == LINEAGE and versions[1]["run_id"] == runs[1][1]
    assert all(v["status"] == "READY" and v["created_ms"] > 0 for v in versions)
    version, art = registry.champion(name)
    assert version == "1" and art.params == runs[0][0].params
    assert registry.load_alias(name, "challenger")[1].params == runs[1][0].params
    assert registry.client.get_run(runs[0][1]).data.tags["mleops.registered"] == "true"

    moved = registry.promote(name, v2)
    assert moved["previous"] == "1" and moved["history"] == ["1"]
    assert _aliases(registry, name) == {"1": [], "2": ["champion"]}  # challenger cleared
    assert registry.champion(name)[0] == "2"
    assert json.loads(registry.client.get_registered_model(name).tags[HISTORY_TAG]) == ["1"]

    back = registry.rollback(name)
    assert back["version"] == "1" and back["previous"] == "2" and back["history"] == []
    assert registry.champion(name)[0] == "1"
    tags = registry.client.get_registered_model(name).tags
    assert json.loads(tags[ROLLBACK_TAG])["to"] == "1" and json.loads(tags[HISTORY_TAG]) == []
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(name)
    assert registry.load_alias(name, "staging") is None


def test_pyfunc_scores_like_the_artifact(registry, runs, mlflow_server, monkeypatch):  # noqa: F811
    name = _name()
    registry.register(name, runs[0][1], tags=LINEAGE)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    art = runs[0][0]
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    x = np.array([0.2, 1.0, 2.5, 7.0, 15.0])
    out = model.predict(pd.DataFrame({"x": x}))
    assert list(out.columns) == ["loglik", "cdf", "q05", "q50", "q95"]
    np.testing.assert_allclose(out["loglik"], art.loglik_rows(x), rtol=1e-12)
    np.testing.assert_allclose(out["cdf"], art.cdf(x), rtol=1e-12)
    np.testing.assert_allclose(out[["q05", "q50", "q95"]].iloc[0], art.ppf([0.05, 0.5, 0.95]))
    event = np.array([1, 0, 1, 0, 1])
    censored = model.predict(pd.DataFrame({"x": x, "event": event}))
    np.testing.assert_allclose(censored["loglik"], art.loglik_rows(x, event=event), rtol=1e-12)
    ints = model.predict(pd.DataFrame({"x": [1, 2, 3]}))  # integer columns are fine
    np.testing.assert_allclose(ints["loglik"], art.loglik_rows([1.0, 2.0, 3.0]), rtol=1e-12)
    with pytest.raises(DataError, match="support"):
        model.predict(pd.DataFrame({"x": [1.0, -2.0]}))
    with pytest.raises(DataError, match="lacks column"):
        model.predict(pd.DataFrame({"y": [1.0]}))
    # the logged model is code + JSON: nothing pickled
    local = mlflow.artifacts.download_artifacts(f"models:/{name}@champion")
    files = os.listdir(local)
    assert "MLmodel" in files and not [f for f in files if f.endswith((".pkl", ".pickle"))]
    reqs = open(os.path.join(local, "requirements.txt")).read().split()
    assert reqs == [f"mlflow=={mlflow.__version__}", f"mleops=={mleops.__version__}"]


def test_logging_spares_mlflow_the_scan_of_every_distribution_and_leaves_no_trace(monkeypatch):
    from mlflow.utils import requirements_utils as ru

    from mleops.registry.pyfunc import _only_our_packages

    monkeypatch.setattr(ru, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(ru, "_PACKAGES_TO_MODULES", None)
    with _only_our_packages():
        assert ru._check_requirement_satisfied(f"mleops=={mleops.__version__}") is None
        assert ru._check_requirement_satisfied("mleops==0.0.0.dev0") is not None  # still checked
        assert set(ru._MODULES_TO_PACKAGES) == {"mlflow", "mleops"}
    # unbuilt again: a model logged later in the process infers from the full map
    assert ru._MODULES_TO_PACKAGES is None and ru._PACKAGES_TO_MODULES is None
    built = {"numpy": ["numpy"]}
    monkeypatch.setattr(ru, "_MODULES_TO_PACKAGES", built)
    with _only_our_packages():  # built already: left alone
        assert ru._MODULES_TO_PACKAGES is built
    assert ru._MODULES_TO_PACKAGES is built


def test_promote_missing_version_changes_nothing(registry, runs):
    name = _name()
    registry.register(name, runs[0][1], tags=LINEAGE)
    registry.register(name, runs[1][1], tags=LINEAGE)
    before = registry.client.get_registered_model(name)
    with pytest.raises(RegistryError, match="no version '7'"):
        registry.promote(name, 7)
    with pytest.raises(RegistryError, match="no registered model"):
        registry.promote(_name(), 1)
    after = registry.client.get_registered_model(name)
    assert after.aliases == before.aliases and after.tags == before.tags


def test_failure_mid_change_is_undone(registry, runs, mlflow_server):  # noqa: F811
    """Fault injection (the server is real): a step after the first change fails."""

    class Flaky(Registry):
        def _set_alias(self, name, alias, version):
            raise RuntimeError("injected failure")

    class FlakyHistory(Registry):
        def _call(self, fn, *args, **kwargs):
            if args[1:2] == (HISTORY_TAG,):
                raise RuntimeError("injected failure")
            return super()._call(fn, *args, **kwargs)

    name = _name()
    with pytest.raises(RuntimeError, match="injected"):
        Flaky(mlflow_server).register(name, runs[0][1], tags=LINEAGE)
    assert registry.client.search_registered_models(f"name = '{name}'") == []
    registry.register(name, runs[0][1], tags=LINEAGE)
    with pytest.raises(RuntimeError, match="injected"):
        Flaky(mlflow_server).register(name, runs[1][1], tags=LINEAGE)
    assert _aliases(registry, name) == {"1": ["champion"]}  # version 2 deleted again
    registry.register(name, runs[1][1], tags=LINEAGE)  # version 3, challenger
    before = registry.client.get_registered_model(name)
    with pytest.raises(RuntimeError, match="injected"):
        FlakyHistory(mlflow_server).promote(name, "3")
    after = registry.client.get_registered_model(name)
    tags = {k: v for k, v in after.tags.items() if k != PENDING_TAG}  # a stale intent is inert
    assert after.aliases == before.aliases and tags == before.tags


class Outage(Registry):
    """MLflow goes down after ``ok`` more calls: nothing after that succeeds (not even the
    undo), as when the server dies right after the champion alias moved."""

    def __init__(self, uri, ok):
        super().__init__(uri, retries=1, backoff=0.01)
        self.ok = ok

    def _call(self, fn, *args, **kwargs):
        if fn.__name__.startswith(("set_", "delete_")) and LOCK_TAG not in args:
            if self.ok <= 0:
                raise RegistryError("injected outage")
            self.ok -= 1
        return super()._call(fn, *args, **kwargs)

    def _quietly(self, fn, *args):
        if self.ok <= 0 and LOCK_TAG not in args:  # (the lock is released: no 60 s wait)
            return
        super()._quietly(fn, *args)


@pytest.mark.parametrize("ok", range(6))
def test_an_interrupted_promotion_completes_on_retry(registry, runs, mlflow_server, ok):  # noqa: F811
    """The outage hits after each write of a champion-challenger promotion in turn; a retry
    (the controller's next tick, or the user again) ends exactly where an uninterrupted
    promotion would: champion moved, the old one on the history, no challenger alias."""
    name = _name()
    registry.register(name, runs[0][1], tags=LINEAGE)
    registry.register(name, runs[1][1], tags=LINEAGE)  # challenger 2
    try:
        Outage(mlflow_server, ok).promote(name, "2")
    except RegistryError:
        pass
    moved = registry.promote(name, "2")
    assert _aliases(registry, name) == {"1": [], "2": ["champion"]}
    rm = registry.client.get_registered_model(name)
    assert json.loads(rm.tags[HISTORY_TAG]) == ["1"] and moved["history"] == ["1"]
    assert PENDING_TAG not in rm.tags and ALIAS_TAG + "challenger" not in rm.tags
    assert registry.rollback(name)["version"] == "1"  # and the history is usable


@pytest.mark.parametrize("ok", [1, 2])
def test_an_interrupted_promotion_is_undone_by_promoting_the_old_champion(
        registry, runs, mlflow_server, ok):  # noqa: F811
    """An abort in the window: promoting the previous champion back restores it with no
    trace of the half-done promotion on the history."""
    name = _name()
    registry.register(name, runs[0][1], tags=LINEAGE)
    registry.register(name, runs[1][1], tags=LINEAGE)
    with pytest.raises(RegistryError):
        Outage(mlflow_server, ok).promote(name, "2")
    registry.promote(name, "1")
    assert _aliases(registry, name)["1"] == ["champion"]
    rm = registry.client.get_registered_model(name)
    assert json.loads(rm.tags.get(HISTORY_TAG, "[]")) == [] and PENDING_TAG not in rm.tags


def test_register_needs_a_logged_model(registry):
    exp = registry.client.get_experiment_by_name("mleops-tests").experiment_id
    bare = registry.client.create_run(exp).info.run_id
    name = _name()
    with pytest.raises(RegistryError, match="no mleops model"):
        registry.register(name, bare, tags={})
    assert registry.list_versions(name) == []


def test_alias_on_deleted_version(registry, runs):
    name = _name()
    registry.register(name, runs[0][1], tags=LINEAGE)
    registry.register(name, runs[1][1], tags=LINEAGE)
    assert registry.client.get_registered_model(name).tags[ALIAS_TAG + "champion"] == "1"
    registry.client.delete_model_version(name, "1")  # MLflow drops the alias with it
    assert "champion" not in registry.client.get_registered_model(name).aliases
    with pytest.raises(RegistryError, match="champion.*version 1, which was deleted"):
        registry.champion(name)
    registry.promote(name, "2")
    assert registry.champion(name)[0] == "2"
    # rolling back onto a deleted champion is refused and changes nothing
    other = _name()
    registry.register(other, runs[0][1], tags=LINEAGE)
    registry.register(other, runs[1][1], tags=LINEAGE)
    registry.promote(other, "2")
    registry.client.delete_model_version(other, "1")
    with pytest.raises(RegistryError, match="version 1 was deleted"):
        registry.rollback(other)
    assert registry.champion(other)[0] == "2"


def test_dead_server_fails_fast(runs):
    uri = f"http://127.0.0.1:{free_port()}"
    dead = Registry(uri, retries=3, backoff=0.1)
    t0 = time.monotonic()
    with pytest.raises(RegistryError, match=f"{uri} unreachable after 3 attempts"):
        dead.champion("anything")
    with pytest.raises(RegistryError, match="unreachable"):
        dead.log_training_run(experiment="x", params={}, metrics={}, artifact=runs[0][0])
    assert time.monotonic() - t0 < 10


def test_embedded_default_and_env_left_alone(runs, tmp_path, monkeypatch):
    """No server: sqlite in the working directory. Our calls leave the caller's URI alone."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = Registry()
    assert local.uri == f"sqlite:///{tmp_path}/mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/never-used")
    art = runs[0][0]
    run_id = local.log_training_run(experiment="e", params={}, metrics={}, artifact=art)
    assert local.register("m", run_id, tags=LINEAGE) == "1"
    assert local.champion("m")[1].params == art.params
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9/never-used"
    assert mlflow.get_tracking_uri() == "http://127.0.0.1:9/never-used"


def test_predict_frame_with_covariates():
    """Regression families read their covariate columns by name (no server needed)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=300)
    X = np.column_stack([np.ones(300), z])
    y = rng.poisson(np.exp(0.3 + 0.5 * z))
    art = ModelArtifact.from_fit(mleops.fit(y, "poisson_glm", X=X, features=("const", "z")))
    out = predict_frame(art, pd.DataFrame({"x": y[:6], "z": z[:6], "id": range(6)}))
    np.testing.assert_allclose(out["loglik"], art.loglik_rows(y[:6], X=X[:6]), rtol=1e-12)
    np.testing.assert_allclose(out["q50"], art.ppf(np.full(6, 0.5), X[:6]))
    with pytest.raises(DataError, match=r"lacks column\(s\) \['z'\]"):
        predict_frame(art, pd.DataFrame({"x": [1.0]}))
    with pytest.raises(DataError, match="expected numbers"):
        predict_frame(art, pd.DataFrame({"x": ["a"], "z": [1.0]}))


def test_embedded_sqlite_store_promote_and_rollback(tmp_path):
    """The embedded store returns alias versions as ints (the REST API: strings); promote must
    still clear the challenger and rollback restore the champion there."""
    reg = Registry(f"sqlite:///{tmp_path / 'm.db'}", retries=1)
    for seed in (1, 2):
        run = reg.log_training_run(experiment="emb", params={"seed": seed}, metrics={},
                                   artifact=_artifact(seed))
        reg.register("emb", run, tags={"mleops.data_hash": str(seed)})
    rows = {r["version"]: r["aliases"] for r in reg.list_versions("emb")}
    assert rows == {"1": ["champion"], "2": ["challenger"]}
    reg.promote("emb", 2)
    rows = {r["version"]: r["aliases"] for r in reg.list_versions("emb")}
    assert rows == {"1": [], "2": ["champion"]}
    reg.rollback("emb")
    assert reg.champion("emb")[0] == "1"


def test_a_rolled_back_version_needs_force(registry, runs):
    name = _name()
    registry.register(name, runs[0][1], tags=LINEAGE)
    registry.register(name, runs[1][1], tags=LINEAGE)
    registry.tag_version(name, "2", {"mleops.rollout": "rolled_back",
                                     "mleops.rollout_reason": "live log-likelihood dropped"})
    with pytest.raises(RegistryError, match=r"version 2 was rolled back by a rollout \(live "
                                            r"log-likelihood dropped\); promote it anyway "
                                            r"with --force"):
        registry.promote(name, "2")
    assert _aliases(registry, name)["1"] == ["champion"]
    assert registry.promote(name, "2", force=True)["changed"]


def test_the_same_candidate_is_registered_once(registry, runs):
    """Same candidate key (data, family, options): the second registration adds nothing,
    under the model's lock, even after the first was rolled back."""
    from mleops.registry import CANDIDATE_TAG, DuplicateVersion

    name = _name()
    key = {**LINEAGE, CANDIDATE_TAG: "k" * 64}
    assert registry.register(name, runs[0][1], tags=key) == "1"
    with pytest.raises(DuplicateVersion, match="version 1 was built from the same data") as e:
        registry.register(name, runs[1][1], tags=key)
    assert e.value.version == "1" and registry.duplicate_of(name, "k" * 64) == "1"
    assert [v["version"] for v in registry.list_versions(name)] == ["1"]
    assert registry.duplicate_of(name, "") is None and registry.duplicate_of(name, "x") is None
    assert registry.register(name, runs[1][1], tags={**key, CANDIDATE_TAG: "j" * 64}) == "2"
