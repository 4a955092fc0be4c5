"""Compare-and-register (mleops.pipeline.regate) on a real MLflow server: a candidate whose
champion moved after its gate is re-gated against the new champion on the same held-out rows,
and registered or rejected on that, with both decisions on the run and the version."""

import json
import uuid

import numpy as np
import pytest

import mleops
from mleops.artifact import ModelArtifact
from mleops.gate import GateConfig
from mleops.pipeline import steps
from mleops.pipeline.dataset import Table, write_table
from mleops.pipeline.regate import DECISIONS_TAG, REGATED_TAG, ChampionKeptMoving
from mleops.registry import Registry

pytestmark = pytest.mark.slow  # a real MLflow server


def _artifact(x) -> ModelArtifact:
    return ModelArtifact.from_fit(mleops.fit(x, "gamma"))


def _gated(tmp_path, reg, name, candidate: ModelArtifact, held: np.ndarray,
           config: GateConfig | None = None) -> dict:
    """evaluate + gate, as the pipeline runs them, against the champion of the moment."""
    model, scores, dec = (str(tmp_path / d) for d in ("model", "scores", "decision"))
    candidate.save(model)
    write_table(Table(held), str(tmp_path / "heldout.parquet"))
    steps.evaluate(model, str(tmp_path / "heldout.parquet"), scores, tracking_uri=reg.uri,
                   model_name=name)
    steps.gate(scores, dec, str(tmp_path / "report.html"), config=config or GateConfig())
    return {"model_dir": model, "scores_dir": scores, "decision_dir": dec,
            "report_html": str(tmp_path / "report.html"),
            "heldout_path": str(tmp_path / "heldout.parquet")}


def _record(reg, name, paths, **kw):
    return steps.record(**paths, tracking_uri=reg.uri, model_name=name,
                        run_tag=uuid.uuid4().hex, params={}, register=True, **kw)


def _champion(reg, name, art: ModelArtifact) -> str:
    run = reg.log_training_run(experiment=name, params={}, metrics={}, artifact=art)
    version = reg.register(name, run, tags={})
    reg.promote(name, version)
    return version


@pytest.fixture
def setup(mlflow_server, tmp_path):
    rng = np.random.default_rng(3)
    return Registry(mlflow_server), f"rg-{uuid.uuid4().hex[:8]}", rng, tmp_path


def test_a_candidate_gated_as_first_model_is_regated_against_the_new_champion(setup):
    reg, name, rng, tmp = setup
    held = rng.gamma(2.0, 1.5, 1500)
    paths = _gated(tmp, reg, name, _artifact(rng.gamma(2.0, 1.5, 3000)), held)
    assert json.loads(open(f"{paths['decision_dir']}/decision.json").read())[
        "champion_version"] == ""
    v1 = _champion(reg, name, _artifact(rng.gamma(2.0, 1.5, 3000)))  # another run won
    out = _record(reg, name, paths)
    assert out["registered_version"] is not None and out["regated"] == 1 and out["passed"]
    mv = reg.client.get_model_version(name, out["registered_version"])
    history = json.loads(mv.tags[DECISIONS_TAG])
    assert [d["champion_version"] for d in history] == ["", v1]
    assert history[0]["outcome"] == "passed" and history[1]["passed"] is True
    assert mv.tags["mleops.champion_version_compared"] == v1
    tags = reg.run_tags(out["run_id"])
    assert tags[REGATED_TAG] == "1" and tags["mleops.champion_version_compared"] == v1
    regate = reg.run_json(out["run_id"], "gate/regate-1.json")
    assert regate["champion_version"] == v1 and regate["stats"]["has_champion"]
    assert regate["stats"]["n"] == held.size  # the same held-out rows, now paired
    assert regate["reasons"][0].startswith("re-gated: the champion moved from none to")


def test_a_regate_rejects_a_candidate_worse_than_the_new_champion(setup):
    reg, name, rng, tmp = setup
    held = rng.gamma(2.0, 1.5, 1500)
    # fitted to a 1/3 wider scale: ~0.07 nats/row worse; a loose KS limit lets it pass
    # alone, and the re-gate must use that same recorded configuration
    worse = _artifact(rng.gamma(2.0, 2.0, 3000))
    paths = _gated(tmp, reg, name, worse, held, GateConfig(ks_max=0.3))
    decision = json.loads(open(f"{paths['decision_dir']}/decision.json").read())
    assert decision["passed"], decision  # as a first model: calibration alone
    v1 = _champion(reg, name, _artifact(rng.gamma(2.0, 1.5, 3000)))
    out = _record(reg, name, paths)
    regate = reg.run_json(out["run_id"], "gate/regate-1.json")
    assert out["registered_version"] is None and not out["passed"], regate["reasons"]
    assert out["regated"] == 1 and regate["outcome"] == "rejected"
    assert regate["config"]["ks_max"] == 0.3 and regate["stats"]["calibration_passed"]
    assert regate["stats"]["likelihood_outcome"] == "worse"
    assert [v["version"] for v in reg.list_versions(name)] == [v1]
    tags = reg.run_tags(out["run_id"])
    assert tags["mleops.gate"] == "rejected" and tags["mleops.registered"] == "false"


def test_a_champion_that_keeps_moving_is_a_clear_refusal(setup, monkeypatch):
    reg, name, rng, tmp = setup
    held = rng.gamma(2.0, 1.5, 1500)
    paths = _gated(tmp, reg, name, _artifact(rng.gamma(2.0, 1.5, 3000)), held)
    _champion(reg, name, _artifact(rng.gamma(2.0, 1.5, 3000)))
    from mleops.pipeline import regate as module

    real = module.regate

    def moving(*a, **kw):  # each re-gate, another promotion lands before it registers
        out = real(*a, **kw)
        _champion(reg, name, _artifact(rng.gamma(2.0, 1.5, 3000)))
        return out

    monkeypatch.setattr(steps, "regate", moving)
    with pytest.raises(ChampionKeptMoving, match=f"the champion of '{name}' moved 3 times"):
        _record(reg, name, paths)
    assert all(v["tags"].get("mleops.pipeline_run") is None for v in reg.list_versions(name))
    from mleops.cli.exits import MOVED, for_error

    assert for_error(ChampionKeptMoving("x")) == MOVED == 6


def test_a_fleet_whose_champion_moved_is_regated_and_its_merge_rebuilt(setup):
    """A fleet gated as a first model; another fleet becomes the champion meanwhile (better
    on keys a and b, worse on c and d). The record step re-gates key by key against it on
    the same held-out rows and registers the merge against the new champion: a new run
    (the first marked superseded), both decisions on the version."""
    from mleops.fleet_artifact import FleetArtifact

    reg, name, rng, tmp = setup
    keys = np.array(list("abcdefgh"))
    scale = {k: 1.0 + i * 0.25 for i, k in enumerate(keys)}

    def fleet(n, widen=()):
        col = np.repeat(keys, n)
        x = np.concatenate([rng.gamma(2.0, scale[k] * (1.6 if k in widen else 1.0), n)
                            for k in keys])
        return FleetArtifact.from_fleet(mleops.fit_fleet({"k": col, "x": x}, "gamma", key="k",
                                                         column="x"))

    cand = fleet(400, widen=("a", "b"))  # the candidate is the worse one on a and b
    model, scores, dec = (str(tmp / d) for d in ("model", "scores", "decision"))
    cand.save(model)
    hk = np.repeat(keys, 600)
    hx = np.concatenate([rng.gamma(2.0, scale[k], 600) for k in keys])
    write_table(Table(hx, keys=(hk.astype(object),), key_names=("k",)),
                str(tmp / "heldout.parquet"))
    steps.evaluate(model, str(tmp / "heldout.parquet"), scores, tracking_uri=reg.uri,
                   model_name=name)
    first = steps.gate(scores, dec, str(tmp / "report.html"), config=GateConfig(),
                       fleet_fdr=0.05)
    assert first["champion_version"] == "" and first["passed"]
    champ = fleet(400, widen=("c", "d"))
    run = reg.log_fleet_run(experiment=name, params={}, metrics={}, fleet=champ)
    v1 = reg.register(name, run, tags={})
    reg.promote(name, v1)
    out = _record(reg, name, {"model_dir": model, "scores_dir": scores, "decision_dir": dec,
                              "report_html": str(tmp / "report.html"),
                              "heldout_path": str(tmp / "heldout.parquet")})
    assert out["registered_version"] is not None and out["regated"] == 1, out
    regate = reg.run_json(out["run_id"], "gate/regate-1.json")
    assert regate["champion_version"] == v1 and regate["reasons"][0].startswith("re-gated")
    take = {r["key"]: r["take"] for r in regate["keys"]}
    assert take["a"] == take["b"] == "champion", take  # found worse against v1
    assert take["c"] == take["d"] == "candidate", take
    _, merged = reg.load_fleet(name, out["registered_version"])
    source = dict(zip(merged.keys[0], merged.source_version))
    assert source["a"] == source["b"] == v1 and source["c"] != v1, source
    mv = reg.client.get_model_version(name, out["registered_version"])
    assert [d["champion_version"] for d in json.loads(mv.tags[DECISIONS_TAG])] == ["", v1]
    assert mv.tags["mleops.fleet.parent_champion"] == v1
    assert reg.run_json(out["run_id"], "gate/decision.json")["champion_version"] == ""
    old = reg.run_tags(reg.run_tags(out["run_id"])["mleops.regated_from_run"])
    assert old["mleops.registered"] == "superseded"
    assert old["mleops.superseded_by"] == out["run_id"]
