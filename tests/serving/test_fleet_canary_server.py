"""A fleet canary in one real OIP v2 server process: the candidate's table beside the
champion's, each (key, request) routed by the routing file, which the server re-reads while it
runs; every answer says per row which arm answered and which key it was, and the metrics
count each version's rows under its own label."""

import json
import urllib.request

import numpy as np
import pandas as pd
import pytest
from support.http import send as http_send

import mleops
from mleops.fleet_artifact import FleetArtifact
from mleops.serving.fleet_canary import Routing, routed, write_routing
from mleops.serving.process import OipServer
from mleops.serving.service import LikelihoodService, stage_fleet

pytestmark = pytest.mark.slow
KEYS = ["a", "b", "c", "d"]


def _fleet(seed, keys, scale=1.0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"store": np.repeat(keys, 200), "x": rng.gamma(2.0, scale, 200 * len(keys))})
    return FleetArtifact.from_fleet(mleops.fit_fleet(df, "gamma", key="store", column="x"))


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("canary")
    champion, candidate = _fleet(0, KEYS), _fleet(1, [*KEYS, "new"], scale=1.4)
    return (stage_fleet(champion, str(root / "v1"), name="stores", version="1"),
            stage_fleet(candidate, str(root / "v2"), name="stores", version="2"),
            str(root / "routing.json"), champion, candidate)


def _body(keys, x, rid):
    return {"id": rid, "inputs": [
        {"name": "store", "datatype": "BYTES", "shape": [len(keys)], "data": list(keys)},
        {"name": "x", "datatype": "FP64", "shape": [len(x)], "data": list(x)}]}


def _infer(server, body):
    return http_send(server.http_port, "POST", "/v2/models/stores/infer", body,
                     {"Content-Type": "application/json"})


def _outputs(doc):
    return {o["name"]: np.asarray(o["data"]) for o in doc["outputs"]}


def test_a_canary_of_a_single_model_is_refused(tmp_path, gamma_model):
    from mleops.errors import DataError

    svc = LikelihoodService(gamma_model[1], canary_dir=str(tmp_path))
    with pytest.raises(DataError, match="beside a fleet only"):
        svc.load()


def test_the_server_routes_each_key_by_the_file_it_rereads(staged, tmp_path):
    champ_dir, cand_dir, routing, champion, candidate = staged
    keys = np.array([*KEYS, "new"] * 6, dtype=object)
    x = np.linspace(0.3, 7.0, keys.size)
    write_routing(routing, Routing(0))
    with OipServer(champ_dir, canary_dir=cand_dir, routing_path=routing,
                   log_path=str(tmp_path / "oip.log")) as server:
        status, doc = _infer(server, _body(keys, x, "r0"))
        assert status == 200, doc
        out = _outputs(doc)
        assert doc["id"] == "r0" and doc["model_version"] == "1"
        assert set(out) == {"loglik", "arm", "key_index"}
        known = keys != "new"
        assert (out["arm"][known] == 0).all() and (out["arm"][~known] == -1).all()
        np.testing.assert_allclose(out["loglik"][known],
                                   champion.loglik_rows(x[known], [keys[known]]), rtol=1e-12)
        np.testing.assert_allclose(out["loglik"][~known],
                                   candidate.loglik_rows(x[~known], [keys[~known]]), rtol=1e-12)
        assert (out["key_index"] == candidate.positions([keys])).all()

        write_routing(routing, Routing(40))  # the server sees it at its next request
        hits = 0
        for i in range(30):
            status, doc = _infer(server, _body(keys, x, f"req-{i}"))
            out = _outputs(doc)
            want = routed(keys, f"req-{i}", 40) & known
            assert ((out["arm"] == 1) == want).all()
            np.testing.assert_allclose(out["loglik"][want],
                                       candidate.loglik_rows(x[want], [keys[want]]), rtol=1e-12)
            hits += int(want.sum())
        assert 0 < hits < 30 * known.sum()

        write_routing(routing, Routing(100, "shadow"))
        status, doc = _infer(server, _body(keys, x, "s"))
        out = _outputs(doc)
        np.testing.assert_allclose(out["loglik"][known],
                                   champion.loglik_rows(x[known], [keys[known]]), rtol=1e-12)
        np.testing.assert_allclose(out["loglik_canary"][known],
                                   candidate.loglik_rows(x[known], [keys[known]]), rtol=1e-12)
        status, err = _infer(server, _body(["nowhere"], [1.0], "bad"))
        assert status == 400 and "'nowhere'" in err["error"], err
        with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
            metrics = r.read().decode()
        rows = {v: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                if line.startswith("mleops_rows_total{") for v in ("1", "2")
                if f'registered_version="{v}"' in line}
        assert rows["2"] > 0 and rows["1"] > 0, rows
        status, meta = http_send(server.http_port, "GET", "/v2/models/stores", b"", {})
        assert {o["name"] for o in meta["outputs"]} >= {"loglik", "arm", "key_index"}
        assert json.loads(json.dumps(meta))  # still serving, answers JSON
