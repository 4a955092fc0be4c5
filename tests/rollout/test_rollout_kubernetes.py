"""The Kubernetes backend by contract: exact API calls to a recording CustomObjectsApi, exact
PromQL to a Prometheus-speaking HTTP server on 127.0.0.1, manifests validated against the CRD.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from kubernetes.client.exceptions import ApiException
from support.kubernetes import REF, RecordingApi
from support.prometheus_stub import Prometheus

from mleops.deploy import DeployError, validate_manifest
from mleops.rollout import AnnotationStateStore, RolloutState, Summary
from mleops.rollout.backends.kubernetes import KubernetesBackend
from mleops.rollout.backends.prometheus import EXECUTOR
from mleops.rollout.state.store import ANNOTATION

SEL = 'namespace="models",registered_model="claims",registered_version="{v}"'
CAN = 'namespace="models",deployment_name="claims",predictor_name="canary"'


@pytest.fixture
def prom():
    p = Prometheus(SEL, CAN)
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def uris(monkeypatch):
    monkeypatch.setattr("mleops.rollout.backends.kubernetes.model_artifact_uri",
                        lambda reg, name, v, artifacts_destination=None: f"s3://models/{v}")


def _state(mode="split"):
    return RolloutState(name="claims", candidate_version="4", champion_version="3", mode=mode)


def _backend(api, prom, clock=lambda: 1000.0):
    return KubernetesBackend("claims", "models", prom.url, api=api, registry=object(),
                             clock=clock)


def _sd(main, canary, shadow=False):
    preds = [{"name": "main", "traffic": main},
             {"name": "canary", "traffic": canary, **({"shadow": True} if shadow else {})}]
    return {"metadata": {"name": "claims", "resourceVersion": "7"},
            "spec": {"predictors": preds}}


@pytest.mark.parametrize("mode, before, weights", [
    ("split", _sd(100, 0), {"main": 90, "canary": 10}),
    ("shadow", _sd(100, 5, shadow=True), {"main": 100, "canary": 10}),
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


def test_read_counts_per_series_and_survives_a_pod_restart(prom):
    state = _state()
    prom.totals("4", {"c-0": (0, 0, 0, 0)})
    prom.totals("3", {"m-0": (400, -420.0, 600.0, 0), "m-1": (500, -530.0, 700.0, 0)})
    prom.executor(10, 0)
    backend = _backend(None, prom)
    state.cursor = backend.evidence.start(state.candidate_version, state.champion_version)
    prom.totals("4", {"c-0": (200, -240.0, 300.0, 6)})
    prom.totals("3", {"m-0": (450, -470.0, 660.0, 0), "m-1": (30, -31.0, 40.0, 0)})  # restart
    prom.executor(40, 3)
    p99 = (f"histogram_quantile(0.99, sum by (le) (rate({EXECUTOR}_bucket{{{CAN}}}[2m])))")
    prom.values[p99] = 0.25
    obs = backend.read(state)
    assert obs.canary_sums == Summary(200, -240.0, 300.0)
    assert obs.champion_sums == Summary(50 + 30, -50.0 - 31.0, 60.0 + 40.0)
    c = obs.arms["canary"]
    assert (c["requests"], c["errors"], c["p99_ms"]) == (30, 3, 250.0)
    assert c["outside_support_rate"] == pytest.approx(6 / 206)
    obs = backend.read(state)  # nothing new: zero increments, counts since the start stay
    assert obs.canary_sums == Summary(0, 0.0, 0.0)
    assert obs.arms["canary"]["requests"] == 30
    sel = SEL.format(v="4")
    assert f"mleops_rows_total{{{sel}}}" in prom.queries and prom.queries[-1] == p99


def test_a_series_missing_from_one_answer_is_counted_when_it_is_back(prom):
    """Partial results (one pod's scrape failed): that tick adds nothing for it; the next
    answer that has it again counts its whole increment, once."""
    state = _state()
    prom.totals("4", {"c-0": (0, 0, 0, 0)})
    prom.totals("3", {"m-0": (100, -100.0, 150.0, 0), "m-1": (100, -110.0, 160.0, 0)})
    prom.executor(0, 0)
    backend = _backend(None, prom)
    state.cursor = backend.evidence.start(state.candidate_version, state.champion_version)
    prom.totals("4", {"c-0": (10, -10.0, 15.0, 0)})
    prom.totals("3", {"m-0": (120, -120.0, 180.0, 0)})  # m-1 missing from this answer
    assert backend.read(state).champion_sums == Summary(20, -20.0, 30.0)
    prom.totals("3", {"m-0": (130, -130.0, 195.0, 0), "m-1": (150, -165.0, 240.0, 0)})
    assert backend.read(state).champion_sums == Summary(10 + 50, -10.0 - 55.0, 15.0 + 80.0)
    assert backend.read(state).arms["champion"]["rows"] == 20 + 60


def test_prometheus_down_is_no_evidence_and_the_rollout_holds(prom):
    from mleops.rollout.backends.base import RolloutError

    state = _state()
    prom.totals("4", {"c-0": (0, 0, 0, 0)})
    prom.totals("3", {"m-0": (0, 0.0, 0.0, 0)})
    prom.executor(0, 0)
    backend = _backend(None, prom)
    state.cursor = backend.evidence.start(state.candidate_version, state.champion_version)
    before = json.dumps(state.cursor, sort_keys=True)
    backend.prometheus = "http://127.0.0.1:9"
    with pytest.raises(RolloutError, match="Prometheus at http://127.0.0.1:9"):
        backend.read(state)
    assert json.dumps(state.cursor, sort_keys=True) == before  # nothing consumed


class Cluster:
    """A SeldonDeployment API with memory: JSON merge patches (lists replaced, null deletes),
    resourceVersion preconditions (409) and bumps, 404 for anything else."""

    def __init__(self, obj):
        self.obj, self.rv, self.calls = copy.deepcopy(obj), 1, []
        self.obj["metadata"]["resourceVersion"] = "1"

    def get_namespaced_custom_object(self, **kw):
        self.calls.append(("get", kw["name"]))
        if kw["name"] != self.obj["metadata"]["name"]:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, *, body, **kw):
        self.calls.append(("patch", copy.deepcopy(body)))
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want and want != self.obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        _merge(self.obj, body)
        self.rv += 1
        self.obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.obj)

    def predictors(self):
        return {p["name"]: p for p in self.obj["spec"]["predictors"]}

    def state(self):
        raw = self.obj["metadata"].get("annotations", {}).get(ANNOTATION)
        return RolloutState.from_dict(json.loads(raw)) if raw else None


def _merge(target, patch):
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


@pytest.fixture
def cluster():
    from mleops.deploy import render_seldon_deployment

    return Cluster(render_seldon_deployment("claims", model_name="claims", version="3",
                                            model_uri="s3://models/3", namespace="models"))


@pytest.mark.parametrize("mode", ["split", "shadow"])
def test_a_rollout_on_one_seldondeployment(cluster, prom, mode):
    """Controller + annotation store + backend on the same object: the backend's patches do
    not erase or outdate the state, a worse canary is rolled back, the version tagged."""
    from support.registry import Registry as FakeRegistry

    from mleops.rollout import Controller, Guardrails, TestConfig

    prom.totals("4", {"c-0": (0, 0, 0, 0)})
    prom.totals("3", {"m-0": (0, 0, 0, 0)})
    prom.executor(0, 0)
    registry = FakeRegistry(champion="3", versions=("3", "4"))
    backend = KubernetesBackend("claims", "models", prom.url, api=cluster, registry=registry)
    store = AnnotationStateStore("models", api=cluster)
    ctl = Controller(store, backend, registry)
    ctl.start("claims", "4", mode=mode, steps="10,100", test=TestConfig(min_drop=0.1),
              guardrails=Guardrails(step_min_rows=50))
    preds = cluster.predictors()
    assert preds["canary"]["traffic"] == 10 and preds["canary"].get("shadow", False) == (
        mode == "shadow")
    assert preds["main"]["traffic"] == (100 if mode == "shadow" else 90)
    assert cluster.state().phase == "progressing" and cluster.state().weight == 10
    validate_manifest({k: v for k, v in cluster.obj.items()})
    rng = np.random.default_rng(0)
    totals = np.zeros((2, 3))
    for tick in range(1, 41):  # each tick's increments are one block of the test
        c, p = rng.normal(-1.6, 0.5, 80), rng.normal(-1.0, 0.5, 720)
        totals += [[c.size, c.sum(), np.square(c).sum()], [p.size, p.sum(), np.square(p).sum()]]
        prom.totals("4", {"c-0": (*totals[0], 0)})
        prom.totals("3", {"m-0": (*totals[1], 0)})
        prom.executor(8 * tick, 0)
        state = ctl.tick("claims")
        if state.terminal:
            break
    # sums have no request ids: ticks are the units, and the burn-in needs min_units of them
    assert tick == TestConfig().min_units  # no decision before the burn-in, then at once
    assert state.phase == "rolled_back" and "dropped" in state.reason
    assert cluster.state().phase == "rolled_back"  # saved on the object, not lost
    if mode == "split":
        assert cluster.predictors()["canary"]["traffic"] == 0
    else:  # a 0% shadow would mirror everything: the canary predictor is gone instead
        assert set(cluster.predictors()) == {"main"}
    assert registry.tags["4"]["mleops.rollout"] == "rolled_back"


def test_state_store_refuses_to_overwrite_another_writer(cluster):
    store = AnnotationStateStore("models", api=cluster)
    assert store.load("claims") is None
    state = _state()
    store.save(state)
    other = AnnotationStateStore("models", api=cluster)
    mine = store.load("claims")
    theirs = other.load("claims")
    theirs.reason = "aborted elsewhere"
    other.save(theirs)
    mine.reason = "my tick"
    with pytest.raises(DeployError, match="changed by another writer"):
        store.save(mine)
    assert cluster.state().reason == "aborted elsewhere"


def test_state_store_finds_the_deployment_of_a_model_name():
    obj = {"metadata": {"name": "claims-x", "resourceVersion": "1"}, "spec": {}}
    api = RecordingApi(get_namespaced_custom_object=[obj])
    assert AnnotationStateStore("models", api=api).load("Claims_X") is None
    assert api.calls[0][1]["name"] == "claims-x"
