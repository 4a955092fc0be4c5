"""The Kubernetes backend by contract: exact API calls to a recording CustomObjectsApi, exact
PromQL to a Prometheus-speaking HTTP server on 127.0.0.1, manifests validated against the CRD.
"""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_deploy import REF, RecordingApi, _stored

from mleops.deploy import validate_manifest
from mleops.rollout import AnnotationStateStore, RolloutState, Summary
from mleops.rollout.kubernetes import EXECUTOR, KubernetesBackend
from mleops.rollout.state import ANNOTATION

SEL = 'registered_model="claims",registered_version="{v}"'
CAN = 'namespace="models",deployment_name="claims",predictor_name="canary"'


class Prometheus:
    """Answers instant queries from ``values`` (missing: empty vector); records each query."""

    def __init__(self):
        self.values, self.queries = {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                promql = q["query"][0]
                outer.queries.append(promql)
                v = outer.values.get(promql)
                result = [] if v is None else [{"metric": {}, "value": [1.0, str(v)]}]
                body = json.dumps({"status": "success", "data": {"resultType": "vector",
                                                                 "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def totals(self, version, n, s, ss, outside=0.0):
        sel = SEL.format(v=version)
        self.values.update({f"sum(mleops_rows_total{{{sel}}})": n,
                            f"sum(mleops_loglik_sum{{{sel}}})": s,
                            f"sum(mleops_loglik_sq_sum{{{sel}}})": ss,
                            f"sum(mleops_rows_outside_support_total{{{sel}}})": outside})


@pytest.fixture
def prom():
    p = Prometheus()
    yield p
    p.server.shutdown()
    p.server.server_close()


@pytest.fixture(autouse=True)
def uris(monkeypatch):
    monkeypatch.setattr("mleops.rollout.kubernetes.model_artifact_uri",
                        lambda reg, name, v, artifacts_destination=None: f"s3://models/{v}")


def _state(mode="split"):
    return RolloutState(name="claims", candidate_version="4", champion_version="3", mode=mode)


def _backend(api, prom, clock=lambda: 1000.0):
    return KubernetesBackend("claims", "models", prom.url, api=api, registry=object(),
                             clock=clock)


def test_deploy_canary_applies_a_validated_manifest_and_records_totals(prom):
    prom.totals("4", 0, 0, 0)
    prom.totals("3", 500, -600.0, 900.0)
    current = _stored({"apiVersion": "machinelearning.seldon.io/v1",
                       "kind": "SeldonDeployment", "metadata": {"name": "claims",
                                                                "namespace": "models"},
                       "spec": {"predictors": []}})
    api = RecordingApi(get_namespaced_custom_object=[current],
                       patch_namespaced_custom_object=[current])
    state = _state()
    _backend(api, prom).deploy_canary(state)
    (m1, get), (m2, patch) = api.calls
    assert m1 == "get_namespaced_custom_object" and get == {**REF, "name": "claims"}
    assert m2 == "patch_namespaced_custom_object"
    body = patch["body"]
    validate_manifest(body)
    preds = {p["name"]: p for p in body["spec"]["predictors"]}
    assert preds["main"]["traffic"] == 100 and preds["canary"]["traffic"] == 0
    assert preds["main"]["graph"]["modelUri"] == "s3://models/3"
    assert preds["canary"]["graph"]["modelUri"] == "s3://models/4"
    assert state.cursor["champion"] == {"n": 500, "total": -600.0, "total_sq": 900.0,
                                        "outside": 0.0}
    assert prom.queries == [
        f"sum(mleops_rows_total{{{SEL.format(v='4')}}})",
        f"sum(mleops_loglik_sum{{{SEL.format(v='4')}}})",
        f"sum(mleops_loglik_sq_sum{{{SEL.format(v='4')}}})",
        f"sum(mleops_rows_outside_support_total{{{SEL.format(v='4')}}})",
        f"sum(mleops_rows_total{{{SEL.format(v='3')}}})",
        f"sum(mleops_loglik_sum{{{SEL.format(v='3')}}})",
        f"sum(mleops_loglik_sq_sum{{{SEL.format(v='3')}}})",
        f"sum(mleops_rows_outside_support_total{{{SEL.format(v='3')}}})",
        f"sum({EXECUTOR}_count{{{CAN}}})",
        f'sum({EXECUTOR}_count{{{CAN},code=~"5.."}})']


def _sd(main, canary, shadow=False):
    preds = [{"name": "main", "traffic": main},
             {"name": "canary", "traffic": canary, **({"shadow": True} if shadow else {})}]
    return {"metadata": {"name": "claims", "resourceVersion": "7"},
            "spec": {"predictors": preds}}


@pytest.mark.parametrize("mode, before, weights", [
    ("split", _sd(100, 0), {"main": 90, "canary": 10}),
    ("shadow", _sd(100, 0, shadow=True), {"main": 100, "canary": 10}),
])
def test_set_weight_patches_exactly_the_traffic(prom, mode, before, weights):
    api = RecordingApi(get_namespaced_custom_object=[before],
                       patch_namespaced_custom_object=[before])
    state = _state(mode)
    state.weight = 10
    _backend(api, prom).set_weight(state)
    expected = copy.deepcopy(before["spec"]["predictors"])
    for p in expected:
        p["traffic"] = weights[p["name"]]
    assert api.calls[1] == ("patch_namespaced_custom_object", {
        **REF, "name": "claims", "body": {"spec": {"predictors": expected},
                                          "metadata": {"resourceVersion": "7"}}})


def test_rollback_sets_canary_traffic_to_zero(prom):
    api = RecordingApi(get_namespaced_custom_object=[_sd(50, 50)],
                       patch_namespaced_custom_object=[_sd(100, 0)])
    state = _state()
    state.weight = 50
    _backend(api, prom).rollback(state)
    body = api.calls[1][1]["body"]
    assert body["spec"]["predictors"] == [{"name": "main", "traffic": 100},
                                          {"name": "canary", "traffic": 0}]
    assert state.weight == 0


def test_read_feeds_increments_and_guardrails(prom):
    state = _state()
    state.cursor = {"canary": {"n": 100, "total": -110.0, "total_sq": 150.0, "outside": 0.0},
                    "champion": {"n": 900, "total": -950.0, "total_sq": 1200.0,
                                 "outside": 0.0},
                    "requests": 10.0, "errors": 0.0, "at": 990.0}
    prom.totals("4", 300, -350.0, 450.0, outside=6)
    prom.totals("3", 50, -52.0, 60.0)  # the champion's pod restarted: counters began again
    prom.values[f"sum({EXECUTOR}_count{{{CAN}}})"] = 40
    prom.values[f'sum({EXECUTOR}_count{{{CAN},code=~"5.."}})'] = 3
    p99 = (f"histogram_quantile(0.99, sum by (le) (rate({EXECUTOR}_bucket{{{CAN}}}[2m])))")
    prom.values[p99] = 0.25
    obs = _backend(None, prom).read(state)
    assert obs.canary_sums == Summary(200, -240.0, 300.0)
    assert obs.champion_sums == Summary(50, -52.0, 60.0)
    assert obs.canary_rows.size == 0
    c = obs.arms["canary"]
    assert (c["requests"], c["errors"], c["p99_ms"]) == (30, 3, 250.0)
    assert c["outside_support_rate"] == pytest.approx(6 / 206)
    assert state.cursor["canary"]["n"] == 300 and state.cursor["start"]["requests"] == 10.0
    assert prom.queries[-1] == p99
    obs = _backend(None, prom).read(state)  # nothing new: zero increments, same start
    assert obs.canary_sums == Summary(0, 0.0, 0.0)
    assert obs.arms["canary"]["requests"] == 30


def test_state_lives_in_an_annotation():
    state = _state()
    state.event("started")
    stored = _sd(90, 10)
    stored["metadata"]["annotations"] = {ANNOTATION: json.dumps(state.to_dict())}
    api = RecordingApi(get_namespaced_custom_object=[stored],
                       patch_namespaced_custom_object=[{"metadata": {"resourceVersion": "8"}}])
    store = AnnotationStateStore("models", api=api)
    loaded = store.load("claims")
    assert loaded == state
    store.save(loaded)
    method, kwargs = api.calls[1]
    assert method == "patch_namespaced_custom_object"
    assert kwargs["body"]["metadata"]["resourceVersion"] == "7"  # optimistic concurrency
    saved = json.loads(kwargs["body"]["metadata"]["annotations"][ANNOTATION])
    assert RolloutState.from_dict(saved).history == state.history
    assert store._versions["claims"] == "8"
