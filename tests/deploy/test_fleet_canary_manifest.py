"""A fleet canary on a cluster, by contract: the InferenceService (both tables in one pod)
against the real KServe CRD, the routing ConfigMap it mounts, and the controller's routing
writer against a Kubernetes API stub on 127.0.0.1 that the real kubernetes client talks to."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from support.kube_api import kube_stub

from mleops.deploy import DeployError, render_fleet_canary
from mleops.deploy.fleet_canary import CANDIDATE_DIR, CHAMPION_DIR, fleet_storage_uri
from mleops.errors import DataError
from mleops.rollout.backends.fleet_server import FleetServer
from mleops.serving.fleet_canary import Routing, RoutingFile

ARGS = dict(model_name="shop-demand", version="3", model_uri="s3://mlflow/1/models/m-a",
            canary_version="4", canary_model_uri="s3://mlflow/1/models/m-b")


@pytest.mark.parametrize("mode", ["Serverless", "Standard", "RawDeployment"])
def test_one_pod_holds_both_tables_and_mounts_the_routing(mode):
    cm, isvc = render_fleet_canary("shop-demand", weight=10, mode="shadow",
                                   deployment_mode=mode, **ARGS)  # validated against the CRD
    pred = isvc["spec"]["predictor"]
    assert "canary" not in isvc["spec"] and "canaryTrafficPercent" not in pred
    assert pred["minReplicas"] == pred["maxReplicas"] == 1  # one tally
    assert pred["storageUris"] == [
        {"uri": "s3://mlflow/1/models/m-a/artifacts/fleet", "mountPath": CHAMPION_DIR},
        {"uri": "s3://mlflow/1/models/m-b/artifacts/fleet", "mountPath": CANDIDATE_DIR}]
    (c,) = pred["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert "STORAGE_URI" not in env and env["MLEOPS_CANARY_VERSION"] == "4"
    assert env["MLEOPS_MODEL_VERSION"] == "3"
    a = c["args"]
    assert a[a.index("--model-dir") + 1] == CHAMPION_DIR
    assert a[a.index("--canary-model-dir") + 1] == CANDIDATE_DIR
    routing_file = a[a.index("--routing-file") + 1]
    (mount,) = c["volumeMounts"]
    (vol,) = pred["volumes"]
    assert vol["name"] == mount["name"] and mount["readOnly"]
    assert vol["configMap"]["name"] == cm["metadata"]["name"] == "shop-demand-routing"
    assert os.path.dirname(routing_file) == mount["mountPath"]
    doc = cm["data"][os.path.basename(routing_file)]
    assert Routing.from_dict(json.loads(doc)) == Routing(weight=10, mode="shadow")


@pytest.mark.parametrize("change,message", [
    ({"canary_version": "3"}, "is the champion's version"),
    ({"weight": 150}, "routing weight must be an integer in 0..100"),
    ({"mode": "mirror"}, "routing mode must be split or shadow"),
])
def test_what_cannot_work_is_refused(change, message):
    with pytest.raises(DataError, match=message):
        render_fleet_canary("shop-demand", **{**ARGS, **change})


def test_a_fleet_versions_table_lies_where_the_storage_initializer_looks(tmp_path):
    """The registered fleet's table is under MLflow's location of the version plus
    artifacts/fleet (what storageUris downloads into the pod)."""
    import mleops
    from mleops.deploy import model_artifact_uri
    from mleops.fleet_artifact import FleetArtifact
    from mleops.registry import Registry

    rng = np.random.default_rng(0)
    fleet = mleops.fit_fleet({"k": np.repeat(np.arange(4), 100), "x": rng.gamma(2, 1.5, 400)},
                             "gamma", key="k", column="x")
    reg = Registry(f"sqlite:///{tmp_path / 'm.db'}")
    run = reg.log_fleet_run(experiment="f", params={}, metrics={},
                            fleet=FleetArtifact.from_fleet(fleet))
    version = reg.register("f", run, tags={"mleops.data_hash": "h"})
    uri = model_artifact_uri(reg, "f", version)
    path = fleet_storage_uri(uri).removeprefix("file://")
    assert len(FleetArtifact.load(path)) == 4


def test_the_server_sees_a_configmap_update_the_way_the_kubelet_writes_it(tmp_path):
    """The kubelet's projected volume: routing.json -> ..data/routing.json, ..data -> a
    timestamped directory, swapped in one rename. The server's RoutingFile follows it."""
    def project(n: int, routing: Routing) -> None:
        ts = tmp_path / f"..2026_12_08_0{n}"
        ts.mkdir()
        (ts / "routing.json").write_text(json.dumps(routing.to_dict()))
        tmp = tmp_path / "..data_tmp"
        tmp.symlink_to(ts.name)
        os.replace(tmp, tmp_path / "..data")
        if not (tmp_path / "routing.json").is_symlink():
            (tmp_path / "routing.json").symlink_to("..data/routing.json")

    project(1, Routing(weight=10))
    seen = RoutingFile(str(tmp_path / "routing.json"))
    assert seen.current() == Routing(weight=10)
    project(2, Routing(weight=25, held=(3, 7)))
    assert seen.current() == Routing(weight=25, held=(3, 7)) and seen.error == ""


def test_the_controller_writes_the_routing_configmap_through_the_api():
    with kube_stub() as kube:
        server = FleetServer("http://127.0.0.1:9/evidence", "configmap://models/shop-routing",
                             api=kube.api())
        assert server.routing() == Routing()  # none yet: nothing routed
        server.route(Routing(weight=10))
        server.route(Routing(weight=25, held=(3,)))
        assert server.routing() == Routing(weight=25, held=(3,))
        calls = [(r["method"], r["path"]) for r in kube.requests]
    one = "/api/v1/namespaces/models/configmaps/shop-routing"
    assert calls == [("GET", one), ("PATCH", one), ("POST", "/api/v1/namespaces/models/"
                                                          "configmaps"),
                     ("PATCH", one), ("GET", one)]
    created = kube.requests[2]["body"]
    assert created["kind"] == "ConfigMap" and created["metadata"]["name"] == "shop-routing"
    patch = kube.requests[3]
    assert patch["content_type"].endswith("merge-patch+json")
    assert json.loads(patch["body"]["data"]["routing.json"]) == \
        {"weight": 25, "mode": "split", "held": [3], "promoted": []}


def test_a_forbidden_configmap_is_one_deploy_error_naming_it():
    with kube_stub(forbid=True) as kube:
        server = FleetServer("http://127.0.0.1:9/evidence", "configmap://models/shop-routing",
                             api=kube.api())
        with pytest.raises(DeployError, match=r"updating ConfigMap models/shop-routing failed: "
                                              r"HTTP 403 Forbidden: configmaps is forbidden"):
            server.route(Routing(weight=10))


@pytest.mark.parametrize("where", ["configmap://models", "configmap://Models/x",
                                   "configmap:///x"])
def test_a_malformed_configmap_address_is_refused(where):
    with pytest.raises(DataError, match="expected configmap://NAMESPACE/NAME"):
        FleetServer("http://127.0.0.1:9/evidence", where)


def test_the_cli_prints_both_objects_and_refuses_a_bad_routing_address(tmp_path):
    import yaml
    from click.testing import CliRunner

    from mleops.cli.main import main

    r = CliRunner().invoke(main, ["deploy", "fleet-canary", "shop-demand", "--version", "3",
                                  "--canary-version", "4", "--model-uri", ARGS["model_uri"],
                                  "--canary-model-uri", ARGS["canary_model_uri"],
                                  "--weight", "10", "--deployment-mode", "Standard"])
    assert r.exit_code == 0, r.output
    cm, isvc = yaml.safe_load_all(r.output)
    assert (cm["kind"], isvc["kind"]) == ("ConfigMap", "InferenceService")
    assert json.loads(cm["data"]["routing.json"])["weight"] == 10
    bad = CliRunner().invoke(main, ["rollout", "fleet", "start", "shop-demand",
                                    "--candidate-version", "4", "--server", "http://x",
                                    "--routing-file", "configmap://models",
                                    "--state-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "expected configmap://NAMESPACE/NAME" in bad.output
