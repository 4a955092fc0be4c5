"""The end of a fleet rollout through a real MLflow server: one merged version (promoted keys
from the candidate, rolled-back and undecided ones from the champion, per-key lineage, both
parents tagged), the champion alias moved once; finishing again (a controller killed after
registering, resumed) adds nothing; a champion that moved meanwhile registers nothing."""

import uuid

import numpy as np
import pandas as pd
import pytest

import mleops
from mleops.errors import RolloutError
from mleops.fleet_artifact import FleetArtifact, key_labels
from mleops.registry import Registry
from mleops.rollout.control import finish_fleet_rollout, worst_keys
from mleops.rollout.kernels.fleet import PROMOTE, ROLLBACK, FleetConfig, FleetEvidence

pytestmark = pytest.mark.slow  # a real MLflow server


def _fleet(seed, keys, scale):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"store": np.repeat(keys, 150), "x": rng.gamma(2.0, scale, 150 * len(keys))})
    return FleetArtifact.from_fleet(mleops.fit_fleet(df, "gamma", key="store", column="x"))


@pytest.fixture
def registered(mlflow_server):  # noqa: F811
    reg, name = Registry(mlflow_server), f"fleet-{uuid.uuid4().hex[:8]}"
    champion = _fleet(0, ["a", "b", "c", "d", "old"], 1.0)
    candidate = _fleet(1, ["a", "b", "c", "d", "new"], 1.3)
    for art in (champion, candidate):
        run = reg.log_fleet_run(experiment=name, params={}, metrics={}, fleet=art,
                                registered=True)
        reg.register(name, run, tags=art.digests())
    return reg, name, champion, candidate


def _evidence(candidate, decisions: dict[str, int]) -> FleetEvidence:
    ev = FleetEvidence(len(candidate), FleetConfig())
    labels = key_labels(candidate.keys).tolist()
    for key, d in decisions.items():
        ev.a["decision"][labels.index(key)] = d
    ev.a["log_drop"][labels.index("b")] = 5.0
    return ev


def test_the_merge_takes_each_key_from_its_decided_parent_and_moves_the_champion_once(
        registered):
    reg, name, champion, candidate = registered
    ev = _evidence(candidate, {"a": PROMOTE, "b": ROLLBACK, "c": PROMOTE})  # d: undecided
    out = finish_fleet_rollout(reg, name, rollout_id="r1", champion_version="1",
                               candidate_version="2", evidence=ev)
    assert out["version"] == "3" and out["counts"] == {"undecided": 2, "rollback": 1,
                                                      "promote": 2}
    version, merged = reg.load_fleet(name)  # the champion now
    assert version == "3"
    src = dict(zip(key_labels(merged.keys).tolist(), merged.source_version.tolist()))
    assert src == {"a": "2", "b": "1", "c": "2", "d": "1", "new": "2", "old": "1"}
    for key, parent in (("a", candidate), ("b", champion), ("d", champion)):
        np.testing.assert_array_equal(merged.params[merged.positions([np.array([key])])],
                                      parent.params[parent.positions([np.array([key])])])
    tags = {v["version"]: v for v in reg.list_versions(name)}["3"]["tags"]
    assert tags["mleops.parent_champion"] == "1" and tags["mleops.parent_candidate"] == "2"
    assert tags["mleops.keys_rollback"] == "1"
    again = finish_fleet_rollout(reg, name, rollout_id="r1", champion_version="1",
                                 candidate_version="2", evidence=ev)
    assert again["version"] == "3" and len(reg.list_versions(name)) == 3
    assert reg.load_fleet(name)[0] == "3"
    assert worst_keys(key_labels(candidate.keys).tolist(), ev, 1)[0]["key"] == "b"


def test_a_champion_that_moved_meanwhile_registers_nothing(registered):
    reg, name, champion, candidate = registered
    reg.promote(name, "2")
    ev = _evidence(candidate, {"a": PROMOTE})
    with pytest.raises(RolloutError, match="changed since"):
        finish_fleet_rollout(reg, name, rollout_id="r2", champion_version="1",
                             candidate_version="2", evidence=ev)
    assert len(reg.list_versions(name)) == 2 and reg.load_fleet(name)[0] == "2"
