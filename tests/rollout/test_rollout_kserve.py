"""The KServe backend by contract: exact API calls to a recording CustomObjectsApi, exact
PromQL to a Prometheus-speaking server on 127.0.0.1, and full rollouts (promotion and
rollback, both deployment modes) against an in-memory API server with the state on a Lease."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
from kubernetes.client.exceptions import ApiException
from support.kubernetes import RecordingApi
from support.prometheus_stub import Prometheus
from support.registry import Registry as FakeRegistry

from mleops.deploy import render_inference_service, validate_inference_service
from mleops.rollout import Controller, Guardrails, RolloutError, RolloutState, TestConfig
from mleops.rollout.backends.factory import backend_from, state_store
from mleops.rollout.backends.kserve import KServeBackend
from mleops.rollout.state.store import ANNOTATION

SEL = 'namespace="models",registered_model="claims",registered_version="{v}"'
ISVC = dict(group="serving.kserve.io", version="v1beta1", namespace="models",
            plural="inferenceservices", name="claims")
JOIN = (' * on (namespace, pod) group_left () count by (namespace, pod) '
        '(mleops_rows_total{namespace="models",registered_model="claims",'
        'registered_version="4"})')
LAT = 'request_predict_seconds_count{namespace="models",model_name="claims"}'


@pytest.fixture
def prom():
    p = Prometheus(SEL)
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def uris(monkeypatch):
    monkeypatch.setattr("mleops.rollout.backends.kserve.model_artifact_uri",
                        lambda reg, name, v, artifacts_destination=None: f"s3://models/{v}")


def _isvc(version="3", **kw):
    return render_inference_service("claims", model_name="claims", version=version,
                                    model_uri=f"s3://models/{version}", **kw)


def _state(mode="split"):
    return RolloutState(name="claims", candidate_version="4", champion_version="3", mode=mode)


@pytest.mark.parametrize("mode, body", [
    ("Serverless", {"spec": {"predictor": {"canaryTrafficPercent": 25}}}),
    ("Standard", None),
])
def test_set_weight_patches_exactly_the_canary_share(prom, mode, body):
    live = _isvc(canary_version="4", canary_model_uri="s3://models/4", canary_traffic=10,
                 deployment_mode=mode)
    live["metadata"]["resourceVersion"] = "7"
    if body is None:
        canary = copy.deepcopy(live["spec"]["canary"])
        canary[0]["trafficPercent"] = 25
        body = {"spec": {"canary": canary}}
    api = RecordingApi(get_namespaced_custom_object=[live], patch_namespaced_custom_object=[live])
    state = _state()
    state.weight = 25
    KServeBackend("claims", "models", prom.url, api=api, deployment_mode=mode).set_weight(state)
    assert api.calls == [("get_namespaced_custom_object", ISVC),
                         ("patch_namespaced_custom_object", {
                             **ISVC, "body": {**body, "metadata": {"resourceVersion": "7"}}})]


def test_set_weight_refuses_an_object_that_no_longer_serves_the_candidate(prom):
    api = RecordingApi(get_namespaced_custom_object=[_isvc("5")])
    state = _state()
    state.weight = 10
    with pytest.raises(RolloutError, match="does not serve candidate version 4"):
        KServeBackend("claims", "models", prom.url, api=api).set_weight(state)
    assert [c[0] for c in api.calls] == ["get_namespaced_custom_object"]  # nothing patched


def test_a_rawdeployment_backend_and_shadow_mode_are_refused(prom):
    from mleops.deploy import DeployError

    with pytest.raises(DeployError, match="RawDeployment"):
        KServeBackend("claims", "models", prom.url, deployment_mode="RawDeployment")
    api = RecordingApi()
    with pytest.raises(RolloutError, match="KServe mirrors no traffic"):
        KServeBackend("claims", "models", prom.url, api=api).deploy_canary(_state("shadow"))
    assert api.calls == []


def test_read_queries_the_series_and_kserves_latency_on_the_canarys_pods(prom):
    prom.totals("4", {"c-0": (0, 0, 0, 0)})
    prom.totals("3", {"m-0": (100, -100.0, 150.0, 0)})
    prom.values[LAT + JOIN] = {"c-0": 5}
    backend = KServeBackend("claims", "models", prom.url, clock=lambda: 1000.0)
    state = _state()
    state.cursor = backend.evidence.start("4", "3")
    prom.totals("4", {"c-0": (50, -60.0, 80.0, 1, 3)})
    prom.totals("3", {"m-0": (300, -310.0, 450.0, 0)})
    prom.values[LAT + JOIN] = {"c-0": 45}
    p99 = ("histogram_quantile(0.99, sum by (le) (rate(request_predict_seconds_bucket"
           '{namespace="models",model_name="claims"}[2m])' + JOIN + "))")
    prom.values[p99] = 0.04
    prom.queries.clear()
    obs = backend.read(state)
    assert prom.queries == (prom.series_queries("4") + prom.series_queries("3")
                            + [LAT + JOIN, p99])
    assert (obs.canary_sums.n, obs.champion_sums.n) == (50, 200)
    assert obs.arms["canary"]["requests"] == 40 and obs.arms["canary"]["p99_ms"] == 40.0
    # KServe's histogram has no status label: the errors are those the canary's servers
    # counted as their own failures
    assert obs.arms["canary"]["errors"] == 3


class Cluster:
    """A CustomObjectsApi with memory for any kind: JSON merge patches (lists replaced, null
    deletes), resourceVersion preconditions (409) and bumps, creation, 404 otherwise."""

    def __init__(self, *objs):
        self.objs, self.rv, self.calls = {}, 0, []
        for plural, obj in objs:
            self._put(plural, copy.deepcopy(obj))

    def _put(self, plural, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objs[plural, obj["metadata"]["name"]] = obj

    def get_namespaced_custom_object(self, *, plural, name, **kw):
        self.calls.append(("get", plural))
        if (plural, name) not in self.objs:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objs[plural, name])

    def create_namespaced_custom_object(self, *, plural, body, **kw):
        self.calls.append(("create", plural))
        self._put(plural, copy.deepcopy(body))
        return copy.deepcopy(body)

    def patch_namespaced_custom_object(self, *, plural, name, body, **kw):
        self.calls.append(("patch", plural))
        obj = self.objs[plural, name]
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want and want != obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        _merge(obj, body)
        self._put(plural, obj)
        return copy.deepcopy(obj)

    @property
    def isvc(self):
        return self.objs["inferenceservices", "claims"]

    def state(self):
        lease = self.objs.get(("leases", "claims"))
        return RolloutState.from_dict(json.loads(lease["metadata"]["annotations"][ANNOTATION]))


def _merge(target, patch):
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


def _drive(prom, ctl, canary_mean, failed_share=0.0):
    """Ticks until a decision; the canary's servers fail ``failed_share`` of its requests."""
    rng = np.random.default_rng(0)
    totals = np.zeros((2, 3))
    for tick in range(1, 200):
        c, p = rng.normal(canary_mean, 0.5, 80), rng.normal(-1.0, 0.5, 720)
        totals += [[c.size, c.sum(), np.square(c).sum()], [p.size, p.sum(), np.square(p).sum()]]
        prom.totals("4", {"c-0": (*totals[0], 0, round(failed_share * 8 * tick))})
        prom.totals("3", {"m-0": (*totals[1], 0)})
        prom.values[LAT + JOIN] = {"c-0": 8 * tick}
        state = ctl.tick("claims")
        if state.terminal:
            return state
    raise AssertionError(f"no decision: {state.reason}")


@pytest.mark.parametrize("mode", ["Serverless", "Standard"])
@pytest.mark.parametrize("outcome", ["promoted", "rolled_back", "failing"])
def test_a_full_rollout_on_one_inference_service(prom, mode, outcome):
    """failing: as good a model, but its servers fail 1 request in 10 (their own 5xx, counted
    by ``mleops_failed_requests_total``): the error-rate guardrail rolls it back."""
    cluster = Cluster(("inferenceservices", _isvc(deployment_mode=mode)))
    registry = FakeRegistry(champion="3", versions=("3", "4"))
    backend = KServeBackend("claims", "models", prom.url, api=cluster, registry=registry,
                            deployment_mode=mode)
    ctl = Controller(state_store(namespace="models", target="kserve"), backend, registry)
    ctl.store.api = cluster
    prom.totals("4", {"c-0": (0, 0, 0, 0)})
    prom.totals("3", {"m-0": (0, 0, 0, 0)})
    ctl.start("claims", "4", steps="10,50", test=TestConfig(min_drop=0.1),
              guardrails=Guardrails(step_min_rows=50))
    spec = cluster.isvc["spec"]
    if mode == "Serverless":
        assert spec["predictor"]["canaryTrafficPercent"] == 10
        assert spec["predictor"]["labels"]["mleops.io/version"] == "4"
    else:
        assert spec["predictor"]["name"] == "v3"
        assert [(c["predictor"]["name"], c["trafficPercent"]) for c in spec["canary"]] == \
            [("v4", 10)]
    assert cluster.state().phase == "progressing"  # on the Lease, not the InferenceService
    assert ANNOTATION not in cluster.isvc["metadata"].get("annotations", {})
    validate_inference_service({k: v for k, v in cluster.isvc.items()})
    state = _drive(prom, ctl, -1.6 if outcome == "rolled_back" else -1.0,
                   0.1 if outcome == "failing" else 0.0)
    if outcome == "failing":
        assert re.search(r"canary error rate 1\d\.\d% > 5\.0% .*errors: requests the "
                         r"canary's model servers failed", state.reason), state.reason
        outcome = "rolled_back"
    assert state.phase == outcome == cluster.state().phase
    spec = cluster.isvc["spec"]
    served = spec["predictor"]["labels"]["mleops.io/version"]
    if outcome == "promoted":
        assert served == "4" and "canary" not in spec
        assert "canaryTrafficPercent" not in spec["predictor"]
        assert registry.promoted == [("claims", "4")]
        if mode == "Standard":
            assert spec["predictor"]["name"] == "v4"
    elif mode == "Serverless":  # KServe pins the previous revision; the spec stays
        assert served == "4" and spec["predictor"]["canaryTrafficPercent"] == 0
    else:
        assert served == "3" and "canary" not in spec and spec["predictor"]["name"] == "v3"
    if outcome == "rolled_back":
        assert registry.tags["4"]["mleops.rollout"] == "rolled_back"
    validate_inference_service({k: v for k, v in cluster.isvc.items()})
    again = backend_from(cluster.state().backend, registry)
    assert isinstance(again, KServeBackend) and again.describe() == backend.describe()


def test_failed_requests_across_a_restart_and_a_cursor_from_before_they_were_read(prom):
    """A canary that fails every request scores no rows: a restart shows only in its failed
    counter (which went down: the new value is new, not a negative increment). A cursor
    saved before failed requests were a series (one column fewer) starts them from now."""
    backend = KServeBackend("claims", "models", prom.url, clock=lambda: 1000.0)
    prom.totals("3", {"m-0": (100, -100.0, 150.0, 0)})
    prom.values[LAT + JOIN] = {"c-0": 40}
    prom.totals("4", {"c-0": (0, 0.0, 0.0, 0, 40)})
    cursor = backend.evidence.start("4", "3")
    old = copy.deepcopy(cursor)
    for arm in old["series"].values():
        for values in arm.values():
            del values[4]  # the layout before mleops_failed_requests_total
    prom.totals("4", {"c-0": (0, 0.0, 0.0, 0, 7)})  # restarted, failed 7 since
    prom.values[LAT + JOIN] = {"c-0": 47}
    _, arms, _ = backend.evidence.read("4", "3", cursor)
    assert arms["canary"]["errors"] == 7 and arms["canary"]["requests"] == 7
    _, arms, _ = backend.evidence.read("4", "3", old)
    assert arms["canary"]["errors"] == 0  # no column to compare: nothing counted twice
