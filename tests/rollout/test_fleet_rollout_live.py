"""A fleet rollout live, on real fleet canary servers and a real MLflow server: per-key
decisions from the server's counters (worse keys rolled back and held on the champion while
the rest go on), one merged version at the end whose answers the server then gives; and the
same rollout killed (kill -9 at each step of a tick and after registering) and resumed
reaches exactly the same per-key decisions and one merged version, registry and routing in
agreement."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import numpy as np
import pandas as pd
import pytest
from support.http import send as http_send

import mleops
from mleops.fleet_artifact import FleetArtifact, key_labels
from mleops.registry import Registry
from mleops.rollout.control.fleet_controller import DONE, RUNNING, FleetRollout
from mleops.rollout.kernels.fleet import FleetConfig
from mleops.serving.fleet_canary import Routing, RoutingFile
from mleops.serving.process import OipServer
from mleops.serving.service import stage_fleet

pytestmark = pytest.mark.slow
KEYS = [f"k{i:02d}" for i in range(12)]
BAD = {"k03", "k07", "k10"}  # the candidate's fit for these came from the wrong data


def _fleet(seed, scale_of):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"store": np.repeat(KEYS, 300), "x": np.concatenate(
        [rng.gamma(2.0, scale_of(k), 300) for k in KEYS])})
    return FleetArtifact.from_fleet(mleops.fit_fleet(df, "gamma", key="store", column="x"))


@pytest.fixture(scope="module")
def fleets():
    return _fleet(0, lambda k: 1.0), _fleet(1, lambda k: 2.0 if k in BAD else 1.0)


def _served(reg, tmp, name, champion, candidate):
    for art in (champion, candidate):
        run = reg.log_fleet_run(experiment=name, params={}, metrics={}, fleet=art,
                                registered=True)
        reg.register(name, run, tags=art.digests())
    reg.promote(name, "1")
    routing = tmp / f"{name}.routing.json"
    server = OipServer(stage_fleet(champion, str(tmp / f"{name}-v1"), name=name, version="1"),
                       canary_dir=stage_fleet(candidate, str(tmp / f"{name}-v2"), name=name,
                                              version="2"),
                       routing_path=str(routing), log_path=str(tmp / f"{name}.log"))
    return server, str(routing)


def _batch(server, name, i, n=30):
    """The same 30 requests (3 rows of every key; the last key in every third request only:
    it decides later) whichever server gets them."""
    rng = np.random.default_rng(1000 + i)
    for j in range(n):
        keys = np.repeat(KEYS if j % 3 == 0 else KEYS[:-1], 3)
        x = rng.gamma(2.0, 1.0, keys.size)
        body = {"id": f"b{i}-r{j}", "inputs": [
            {"name": "store", "datatype": "BYTES", "shape": [keys.size], "data": keys.tolist()},
            {"name": "x", "datatype": "FP64", "shape": [keys.size], "data": x.tolist()}]}
        status, doc = http_send(server.http_port, "POST", f"/v2/models/{name}/infer", body,
                                {"Content-Type": "application/json"})
        assert status == 200, doc


def _cli(*args, failpoint="", state_dir, uri):
    env = {**os.environ, "MLEOPS_FAILPOINTS": failpoint, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "mleops.cli.main", "rollout", "fleet", *args,
                           "--state-dir", str(state_dir)], capture_output=True, text=True,
                          timeout=240, env=env)


def test_a_fleet_rollout_killed_anywhere_and_resumed_decides_the_same(mlflow_server, fleets,
                                                                      tmp_path):
    champion, candidate = fleets
    reg = Registry(mlflow_server)
    a, b = f"fa-{uuid.uuid4().hex[:6]}", f"fb-{uuid.uuid4().hex[:6]}"
    (srv_a, route_a), (srv_b, route_b) = (_served(reg, tmp_path, n, champion, candidate)
                                          for n in (a, b))
    cfg = FleetConfig(mode="paired", min_drop=0.05, fdr=0.05, min_units=20, min_rows=60)
    labels = key_labels(candidate.keys).tolist()
    with srv_a, srv_b:
        ref = FleetRollout(str(tmp_path / "ref"), a)
        st = ref.start(champion_version="1", candidate_version="2", labels=labels,
                       evidence_url=f"{srv_a.url}/v2/models/{a}/evidence", routing_path=route_a,
                       config=cfg, steps=[50, 100], ticks_per_step=2, max_ticks=10)
        r = _cli("start", b, "--candidate-version", "2", "--server", srv_b.url,
                 "--routing-file", route_b, "--steps", "50,100", "--ticks-per-step", "2",
                 "--max-ticks", "10", "--mode", "shadow", "--min-rows", "60", "--detach",
                 "--json",
                 state_dir=tmp_path / "killed", uri=mlflow_server)
        assert r.returncode == 0, r.stdout + r.stderr
        killed = FleetRollout(str(tmp_path / "killed"), b)
        assert killed.load().config == st.config
        kills = {0: "fleet.read_saved", 3: "fleet.applied"}
        held_seen = False
        for i in range(12):
            if st.phase == DONE and killed.load().phase == DONE:
                break
            for server, name in ((srv_a, a), (srv_b, b)):
                _batch(server, name, i)
            if st.phase != DONE:
                st = ref.tick(st, reg)
                held_seen |= bool(ref.routing_of(st).held) and st.phase == RUNNING
            fp = kills.get(i, "fleet.registered")
            r = _cli("resume", b, "--ticks", "1", "--interval", "0", "--json", failpoint=fp,
                     state_dir=tmp_path / "killed", uri=mlflow_server)
            if r.returncode == 137:  # killed: resume right away as an operator would
                if fp == "fleet.read_saved":  # traffic goes on meanwhile: not in this block
                    for server, name in ((srv_a, a), (srv_b, b)):
                        _batch(server, name, 100 + i)
                again = ["--ticks", "1"] if fp != "fleet.applied" else ["--timeout", "0"]
                r = _cli("resume", b, *again, "--interval", "0", "--json",
                         state_dir=tmp_path / "killed", uri=mlflow_server)
            assert r.returncode in (0, 1), r.stdout + r.stderr
            assert RoutingFile(route_b).current() == killed.routing_of(killed.load())
        kb = killed.load()
        assert st.phase == DONE and kb.phase == DONE, (st.history[-3:], kb.history[-3:])
        assert held_seen, "rolled-back keys were held on the champion during the rollout"
        st = ref.load()  # as saved (in memory the per-key fields are arrays)
        assert kb.evidence["decision"] == st.evidence["decision"]
        assert kb.evidence["tick"] == st.evidence["tick"]
        decision = dict(zip(labels, st.evidence["decision"]))
        assert {k for k, d in decision.items() if d == 1} == BAD, decision
        assert all(decision[k] == 2 for k in KEYS if k not in BAD), decision
        for name, out in ((a, st), (b, kb)):
            versions = reg.list_versions(name)
            assert len(versions) == 3, versions  # v1, v2, one merged version
            version, merged = reg.load_fleet(name)
            assert version == out.result["version"] == "3"
            src = dict(zip(key_labels(merged.keys).tolist(), merged.source_version.tolist()))
            assert {k for k, v in src.items() if v == "1"} == BAD
        # the server now answers exactly the merged version's table
        assert RoutingFile(route_b).current() == Routing(100, "split", tuple(
            i for i, k in enumerate(labels) if k in BAD))
        x = np.linspace(0.5, 6.0, len(KEYS))
        body = {"id": "after", "inputs": [
            {"name": "store", "datatype": "BYTES", "shape": [len(KEYS)], "data": KEYS},
            {"name": "x", "datatype": "FP64", "shape": [len(KEYS)], "data": x.tolist()}]}
        status, doc = http_send(srv_b.http_port, "POST", f"/v2/models/{b}/infer", body,
                                {"Content-Type": "application/json"})
        ll = np.asarray(next(o["data"] for o in doc["outputs"] if o["name"] == "loglik"))
        _, merged = reg.load_fleet(b)
        np.testing.assert_allclose(ll, merged.loglik_rows(x, [np.array(KEYS, object)]),
                                   rtol=1e-12)
        r = _cli("status", b, "--keys", "--json", state_dir=tmp_path / "killed",
                 uri=mlflow_server)
        doc = json.loads(r.stdout)
        assert doc["counts"] == {"undecided": 0, "rollback": 3, "promote": 9}
        assert len(doc["keys"]) == len(KEYS) and {k["key"] for k in doc["keys"][:3]} == BAD
        r = subprocess.run([sys.executable, "-m", "mleops.cli.main", "rollout", "status", b,
                            "--state-dir", str(tmp_path / "killed")], capture_output=True,
                           text=True, timeout=120)  # the plain status knows fleet rollouts
        assert r.returncode == 0 and "rolled back 3, undecided 0" in r.stdout, r.stdout
        assert len([ln for ln in r.stdout.splitlines() if "rollback" in ln]) == 3


def test_the_judge_answers_a_fleet_as_a_whole_with_its_per_key_counts(fleets, tmp_path):
    """Argo's web metric / Flagger's view: rollback once more than the allowed share of keys
    is worse (3 of 12 > 10%), promote when a 30% share is allowed and every key is decided;
    JSON always, also for a bad request; a restarted judge resumes from its state."""
    from mleops.rollout.judge import FleetJudge, Judge, JudgeServer
    from mleops.serving.fleet_canary import write_routing

    champion, candidate = fleets
    name = "jf"
    routing = str(tmp_path / "routing.json")
    write_routing(routing, Routing(50))
    server = OipServer(stage_fleet(champion, str(tmp_path / "v1"), name=name, version="1"),
                       canary_dir=stage_fleet(candidate, str(tmp_path / "v2"), name=name,
                                              version="2"),
                       routing_path=routing, log_path=str(tmp_path / "oip.log"))
    cfg = FleetConfig(min_drop=0.2, fdr=0.05, min_rows=60, min_units=20)  # split: unpaired
    url = "http://127.0.0.1:{port}/v2/models/{model}/evidence"
    answers = {}
    with server:
        judges = {share: FleetJudge(url.replace("{port}", str(server.http_port)), config=cfg,
                                    max_rollback_share=share, min_interval_s=0,
                                    state_dir=str(tmp_path / f"judge{share}"))
                  for share in (0.1, 0.3)}
        first = {s: j.judge(name, "2", "1") for s, j in judges.items()}
        assert all(a["decision"] == "continue" and a["ticks"] == 0 for a in first.values())
        for i in range(30):
            _batch(server, name, i)
            for share in list(judges):
                if share in answers:
                    continue
                if i == 2:  # a judge restarted mid-way resumes from its state
                    judges[share] = FleetJudge(url.replace("{port}", str(server.http_port)),
                                               config=cfg, max_rollback_share=share,
                                               min_interval_s=0,
                                               state_dir=str(tmp_path / f"judge{share}"))
                a = judges[share].judge(name, "2", "1")
                assert a["ticks"] == i + 1
                if a["decision"] != "continue":
                    answers[share] = a
            if len(answers) == 2:
                break
        assert answers[0.1]["decision"] == "rollback", answers
        assert answers[0.1]["counts"]["rollback"] >= 2
        assert answers[0.3]["decision"] == "promote" and answers[0.3]["counts"] == {
            "undecided": 0, "rollback": 3, "promote": 9}, answers[0.3]
        bad = {i for i, k in enumerate(key_labels(candidate.keys)) if k in BAD}
        assert {w["key_index"] for w in answers[0.3]["worst_keys"][:3]} == bad
        with JudgeServer(Judge("http://127.0.0.1:9"), fleet=judges[0.3]) as js:
            for query, status, decision in (("?canary=2&champion=1", 200, "promote"),
                                            ("?canary=2", 400, "error")):
                try:
                    with urllib.request.urlopen(f"{js.url}/v1/judge/fleet/{name}{query}",
                                                timeout=10) as r:
                        code, doc = r.status, json.load(r)
                except urllib.error.HTTPError as e:
                    code, doc = e.code, json.load(e)
                assert (code, doc["decision"]) == (status, decision), doc
                assert doc.get("cached", True)
