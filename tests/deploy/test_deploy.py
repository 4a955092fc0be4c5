"""Seldon deployment: manifests checked against the real CRD, apply/traffic against a recording
CustomObjectsApi double, the CLI, and modelUri lookup in a real (embedded sqlite) MLflow."""

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException
from support.kubernetes import REF, RecordingApi

import mleops
from mleops.artifact import ModelArtifact
from mleops.cli.deploy import deploy
from mleops.deploy import (
    DeployError,
    apply_manifest,
    crd_schema,
    default_crd_path,
    get_traffic,
    model_artifact_uri,
    render_seldon_deployment,
    set_traffic,
    to_yaml,
    validate_manifest,
)
from mleops.deploy.k8s import _to_jsonschema
from mleops.errors import DataError
from mleops.registry.registry import Registry, RegistryError

CRD = default_crd_path()
needs_crd = pytest.mark.skipif(not CRD.is_file(), reason=f"SeldonDeployment CRD absent at {CRD}")


def test_crd_is_always_available_and_the_copy_is_verbatim():
    """The package carries the real CRD (mleops/deploy/crds/), so CI never skips validation; where the shared copy
    exists too, they must be identical."""
    repo = Path(__file__).resolve().parents[2]
    vendored = repo / "src" / "mleops" / "deploy" / "crds" / "seldondeployment-crd.yaml"
    assert vendored.is_file() and CRD.is_file()
    shared = repo.parent / "shared" / "schemas" / "seldondeployment-crd.yaml"
    if shared.is_file():
        assert shared.read_bytes() == vendored.read_bytes()
URI, CANARY_URI = "s3://models/1/models/m-aaa/artifacts", "s3://models/1/models/m-bbb/artifacts"


def _render(**kw):
    args = dict(model_name="claims", version="3", model_uri=URI)
    return render_seldon_deployment("claims-svc", **{**args, **kw})


def _canary(**kw):
    return _render(canary_version="4", canary_model_uri=CANARY_URI, **kw)


def _container(pred):
    return pred["componentSpecs"][0]["spec"]["containers"][0]


def _params(pred):
    return {p["name"]: (p["type"], p["value"]) for p in pred["graph"]["parameters"]}


# --- manifests --------------------------------------------------------------------------------
@needs_crd
def test_plain_manifest_is_valid_and_complete():
    m = validate_manifest(_render(), CRD)
    assert (m["apiVersion"], m["kind"]) == ("machinelearning.seldon.io/v1", "SeldonDeployment")
    assert m["metadata"]["namespace"] == "models"
    assert m["metadata"]["labels"]["mleops.io/model"] == "claims"
    [main] = m["spec"]["predictors"]
    assert (main["name"], main["traffic"], main.get("shadow", False)) == ("main", 100, False)
    assert main["labels"] == {"mleops.io/model": "claims", "mleops.io/version": "3"}
    c = _container(main)
    assert c["name"] == main["graph"]["name"] == "model"
    assert {"name": "MLEOPS_BIND_HOST", "value": "0.0.0.0"} in c["env"]
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                              "limits": {"cpu": "500m", "memory": "1Gi"}}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/status", "port": "http",
                                              "scheme": "HTTP"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/ping"
    assert main["graph"]["type"] == "MODEL" and main["graph"]["modelUri"] == URI
    assert _params(main) == {"model_dir": ("STRING", "/mnt/models/artifacts"),
                             "max_rows": ("INT", "10000"), "model_name": ("STRING", "claims"),
                             "model_version": ("STRING", "3")}
    pod = main["componentSpecs"][0]
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true",
                                              "prometheus.io/path": "/prometheus",
                                              "prometheus.io/port": "6000"}
    [init] = pod["spec"]["initContainers"]  # downloads modelUri where model_dir points
    assert init["args"] == [URI, "/mnt/models"] and "envFrom" not in init
    assert init["volumeMounts"][0]["mountPath"] == c["volumeMounts"][0]["mountPath"]
    assert "envSecretRefName" not in main["graph"]


@needs_crd
def test_canary_manifest_splits_traffic():
    m = validate_manifest(_canary(canary_traffic=10, env_secret_ref_name="s3-creds"), CRD)
    main, canary = m["spec"]["predictors"]
    assert [(p["name"], p["traffic"]) for p in (main, canary)] == [("main", 90), ("canary", 10)]
    assert sum(p["traffic"] for p in m["spec"]["predictors"]) == 100
    assert "shadow" not in canary
    assert canary["graph"]["modelUri"] == CANARY_URI
    assert _params(canary)["model_version"] == ("STRING", "4")
    assert canary["labels"]["mleops.io/version"] == "4"
    assert m["metadata"]["labels"]["mleops.io/canary-version"] == "4"
    assert canary["graph"]["envSecretRefName"] == "s3-creds"
    init = canary["componentSpecs"][0]["spec"]["initContainers"][0]
    assert init["args"][0] == CANARY_URI
    assert init["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]


@needs_crd
def test_shadow_manifest_mirrors_to_the_canary():
    m = validate_manifest(_canary(shadow=True), CRD)
    main, canary = m["spec"]["predictors"]
    assert (main["traffic"], main.get("shadow", False)) == (100, False)
    assert (canary["traffic"], canary["shadow"]) == (0, True)
    m = validate_manifest(_canary(shadow=True, canary_traffic=25), CRD)  # mirror a quarter
    assert [p["traffic"] for p in m["spec"]["predictors"]] == [100, 25]


@pytest.mark.parametrize("kw, message", [
    (dict(canary_traffic=101), r"canary_traffic must be an integer in 0\.\.100, got 101"),
    (dict(canary_traffic=-1), r"canary_traffic must be an integer in 0\.\.100, got -1"),
    (dict(canary_traffic=10), "canary_traffic=10 given without a canary version"),
    (dict(shadow=True), "shadow mode needs a canary version"),
    (dict(canary_model_uri=CANARY_URI), "canary_model_uri given without a canary version"),
    (dict(canary_version="4"), "canary_model_uri must be a non-empty URI"),
    (dict(canary_version="3", canary_model_uri=CANARY_URI), "version the main predictor"),
    (dict(namespace="Models"), "namespace 'Models' is not a DNS-1123 label"),
    (dict(model_name="claims model"), "model name 'claims model' cannot be a Kubernetes label"),
    (dict(version=""), "model version '' cannot be a Kubernetes label"),
    (dict(model_uri=""), "model_uri must be a non-empty URI"),
    (dict(replicas=-1), "replicas must be an integer"),
    (dict(max_rows=0), "max_rows must be an integer in 1"),
    (dict(cpu="half"), "cpu 'half' is not a Kubernetes quantity"),
    (dict(memory="1 GB"), "memory '1 GB' is not a Kubernetes quantity"),
    (dict(env_secret_ref_name="S3_creds"), "env_secret_ref_name 'S3_creds' is not a secret"),
    (dict(model_dir="/models"), "model_dir '/models' must lie under /mnt/models"),
])
def test_bad_inputs_are_data_errors(kw, message):
    with pytest.raises(DataError, match=message):
        _render(**kw)


@pytest.mark.parametrize("name", ["Claims", "1claims", "claims_svc", "claims-", "x" * 57, ""])
def test_deployment_names_must_be_dns_labels(name):
    with pytest.raises(DataError, match="must be a DNS-1035 label of at most 56 characters"):
        render_seldon_deployment(name, model_name="m", version="1", model_uri=URI)


def _break(mutate):
    m = _canary(canary_traffic=10)
    mutate(m)
    return m


@needs_crd
@pytest.mark.parametrize("mutate, message", [
    (lambda m: m["spec"]["predictors"][0].update(traffic="ninety"),
     r"spec\.predictors\[0\]\.traffic: 'ninety' is not of type 'integer'"),
    (lambda m: m["spec"]["predictors"][1]["graph"].update(modelURI="s3://x"),  # typo
     r"spec\.predictors\[1\]\.graph: Additional properties .* \('modelURI' was unexpected\)"),
    (lambda m: _container(m["spec"]["predictors"][0])["resources"]["limits"].update(cpu="lots"),
     r"containers\[0\]\.resources\.limits\.cpu: 'lots' does not match"),
    (lambda m: _container(m["spec"]["predictors"][0])["readinessProbe"]["httpGet"].update(
        port=[9000]), r"readinessProbe\.httpGet\.port: \[9000\] is not valid"),
    (lambda m: m["spec"]["predictors"][0]["graph"].pop("name"),
     r"spec\.predictors\[0\]\.graph: 'name' is a required property"),
    (lambda m: m["spec"]["predictors"][0].update(traffic=80),
     "traffic of the non-shadow predictors sums to 90, not 100"),
    (lambda m: m["spec"]["predictors"][1].update(name="main"), "duplicate predictor names"),
    (lambda m: m["spec"]["predictors"][1]["graph"].update(name="other"),
     r"predictors\[1\]\.graph\.name: no container named 'other'"),
    (lambda m: m.update(kind="Deployment"), "not machinelearning.seldon.io/v1/SeldonDeployment"),
    (lambda m: m["metadata"].update(name="Bad_Name"), "metadata.name: 'Bad_Name'"),
])
def test_the_validator_rejects_broken_manifests(mutate, message):
    with pytest.raises(DataError, match=message):
        validate_manifest(_break(mutate), CRD)


@needs_crd
def test_unknown_fields_are_rejected_only_in_strict_mode():
    m = _break(lambda m: _container(m["spec"]["predictors"][0]).update(imagePullPolice="Never"))
    with pytest.raises(DataError, match="'imagePullPolice' was unexpected"):
        validate_manifest(m, CRD)
    validate_manifest(m, CRD, strict=False)  # the API server would prune it silently


def test_openapi_extensions_are_converted():
    node = {"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": True},
        "note": {"type": "string", "nullable": True, "description": "ignored"},
        "free": {"type": "object", "properties": {"a": {"type": "integer"}},
                 "x-kubernetes-preserve-unknown-fields": True}}}
    s = _to_jsonschema(node, strict=True)
    assert s["additionalProperties"] is False
    assert s["properties"]["port"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert s["properties"]["note"] == {"anyOf": [{"type": "null"}, {"type": "string"}]}
    assert "additionalProperties" not in s["properties"]["free"]
    assert "additionalProperties" not in _to_jsonschema(node, strict=False)


@needs_crd
def test_crd_schema_errors(tmp_path):
    with pytest.raises(DataError, match="CRD not found at"):
        crd_schema(tmp_path / "missing.yaml", version="v1")
    with pytest.raises(DataError, match="no version 'v9'"):
        crd_schema(CRD, version="v9")


def test_yaml_round_trips():
    m = _canary(canary_traffic=10)
    text = to_yaml(m)
    assert yaml.safe_load(text) == m
    assert "mleops.io/version: '3'" in text and "prometheus.io/scrape: 'true'" in text
    m10 = render_seldon_deployment("a", model_name="m", version="10", model_uri=URI)
    assert yaml.safe_load(to_yaml(m10))["metadata"]["labels"]["mleops.io/version"] == "10"


# --- apply / traffic against a recording CustomObjectsApi ---------------------------------------
def _api_error(status, reason, message=None):
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps({"kind": "Status", "message": message}) if message else None
    return e


def _stored(manifest, rv="41"):
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(resourceVersion=rv, uid="u-1")
    return obj


def test_apply_creates_when_absent():
    m = _render()
    api = RecordingApi(get_namespaced_custom_object=[_api_error(404, "Not Found")],
                       create_namespaced_custom_object=[_stored(m, "1")])
    assert apply_manifest(m, api=api)["metadata"]["resourceVersion"] == "1"
    assert api.calls == [("get_namespaced_custom_object", {**REF, "name": "claims-svc"}),
                         ("create_namespaced_custom_object", {**REF, "body": m})]


def test_apply_patches_when_present():
    m = _canary(canary_traffic=10)
    api = RecordingApi(get_namespaced_custom_object=[_stored(m)],
                       patch_namespaced_custom_object=[_stored(m, "42")])
    assert apply_manifest(m, api=api)["metadata"]["resourceVersion"] == "42"
    assert api.calls == [("get_namespaced_custom_object", {**REF, "name": "claims-svc"}),
                         ("patch_namespaced_custom_object",
                          {**REF, "name": "claims-svc", "body": m})]


def test_apply_removes_stale_mleops_labels():
    """Dropping the canary: the merge patch deletes mleops.io/canary-version, keeps others'."""
    old = _stored(_canary(canary_traffic=50))
    old["metadata"]["labels"]["team"] = "risk"
    m = _render(version="4", model_uri=CANARY_URI)
    api = RecordingApi(get_namespaced_custom_object=[old], patch_namespaced_custom_object=[{}])
    apply_manifest(m, api=api)
    body = api.calls[1][1]["body"]
    assert body["metadata"]["labels"] == {**m["metadata"]["labels"],
                                          "mleops.io/canary-version": None}
    assert body["spec"] == m["spec"]  # the predictors list is replaced whole: only main


@pytest.mark.parametrize("status, reason", [(403, "Forbidden"), (500, "Internal Server Error")])
def test_apply_reports_api_errors_without_further_calls(status, reason):
    api = RecordingApi(get_namespaced_custom_object=[
        _api_error(status, reason, 'seldondeployments "claims-svc" is forbidden: User "ci"')])
    with pytest.raises(DeployError, match=rf"reading SeldonDeployment models/claims-svc failed: "
                                          rf"HTTP {status} {reason}: seldondeployments"):
        apply_manifest(_render(), api=api)
    assert [c[0] for c in api.calls] == ["get_namespaced_custom_object"]


def test_apply_reports_a_rejected_create():
    api = RecordingApi(get_namespaced_custom_object=[_api_error(404, "Not Found")],
                       create_namespaced_custom_object=[_api_error(
                           422, "Unprocessable Entity", "Traffic must sum to 100")])
    with pytest.raises(DeployError, match="creating SeldonDeployment models/claims-svc failed: "
                                          "HTTP 422 Unprocessable Entity: Traffic must sum"):
        apply_manifest(_render(), api=api)


def test_apply_rejects_non_manifests():
    with pytest.raises(DataError, match="not a machinelearning.seldon.io/v1 SeldonDeployment"):
        apply_manifest({"kind": "Deployment"}, api=RecordingApi())
    m = _render()
    del m["metadata"]["namespace"]
    with pytest.raises(DataError, match="needs metadata.name and metadata.namespace"):
        apply_manifest(m, api=RecordingApi())


def test_set_traffic_patches_only_traffic():
    current = _stored(_canary(canary_traffic=10))
    api = RecordingApi(get_namespaced_custom_object=[current],
                       patch_namespaced_custom_object=[{"patched": True}])
    assert set_traffic("claims-svc", "models", {"main": 75, "canary": 25}, api=api) == {
        "patched": True}
    predictors = copy.deepcopy(current["spec"]["predictors"])
    predictors[0]["traffic"], predictors[1]["traffic"] = 75, 25
    assert api.calls == [
        ("get_namespaced_custom_object", {**REF, "name": "claims-svc"}),
        ("patch_namespaced_custom_object", {**REF, "name": "claims-svc", "body": {
            "metadata": {"resourceVersion": "41"}, "spec": {"predictors": predictors}}})]


def test_set_traffic_retries_on_conflict_and_skips_no_ops():
    current = _stored(_canary(canary_traffic=10))
    newer = _stored(current, "43")
    api = RecordingApi(get_namespaced_custom_object=[current, newer],
                       patch_namespaced_custom_object=[_api_error(409, "Conflict"), {"ok": 1}])
    assert set_traffic("claims-svc", "models", {"main": 0, "canary": 100}, api=api) == {"ok": 1}
    assert [c[1]["body"]["metadata"]["resourceVersion"] for c in api.calls
            if c[0].startswith("patch")] == ["41", "43"]
    api = RecordingApi(get_namespaced_custom_object=[current])
    assert set_traffic("claims-svc", "models", {"main": 90}, api=api) is current
    assert len(api.calls) == 1  # nothing to change: no patch
    api = RecordingApi(get_namespaced_custom_object=[current])
    assert get_traffic("claims-svc", "models", api=api) == {"main": 90, "canary": 10}


@pytest.mark.parametrize("weights, error, message", [
    ({"main": 80}, DataError, r"would sum to 90, not 100: \{'main': 80, 'canary': 10\}"),
    ({"main": 50, "blue": 50}, DataError, r"has no predictor\(s\) \['blue'\]"),
    ({"main": 101}, DataError, "traffic for predictor 'main' must be an integer in 0..100"),
    ({"main": 90.0}, DataError, "must be an integer"),
    ({}, DataError, "non-empty mapping"),
])
def test_set_traffic_validation(weights, error, message):
    api = RecordingApi(get_namespaced_custom_object=[_stored(_canary(canary_traffic=10))])
    with pytest.raises(error, match=message):
        set_traffic("claims-svc", "models", weights, api=api)
    assert not [c for c in api.calls if c[0].startswith("patch")]


def test_set_traffic_shadow_and_missing_object():
    api = RecordingApi(get_namespaced_custom_object=[_stored(_canary(shadow=True))],
                       patch_namespaced_custom_object=[{}])
    set_traffic("claims-svc", "models", {"canary": 50}, api=api)  # mirror half; main stays 100
    assert [p["traffic"] for p in api.calls[1][1]["body"]["spec"]["predictors"]] == [100, 50]
    api = RecordingApi(get_namespaced_custom_object=[_api_error(404, "Not Found")])
    with pytest.raises(DeployError, match="no SeldonDeployment models/claims-svc"):
        set_traffic("claims-svc", "models", {"main": 100}, api=api)


# --- CLI --------------------------------------------------------------------------------------
@needs_crd
def test_cli_render_prints_a_valid_manifest(tmp_path):
    args = ["render", "claims-svc", "--version", "3", "--model-uri", URI, "--canary-version",
            "4", "--canary-model-uri", CANARY_URI, "--canary-traffic", "10", "--crd", str(CRD)]
    result = CliRunner().invoke(deploy, args)
    assert result.exit_code == 0, result.output
    m = validate_manifest(yaml.safe_load(result.stdout), CRD)
    assert m == _canary(canary_traffic=10, model_name="claims-svc")
    out = tmp_path / "sdep.yaml"
    result = CliRunner().invoke(deploy, [*args, "--shadow", "-o", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert yaml.safe_load(out.read_text())["spec"]["predictors"][1]["shadow"] is True


def test_cli_render_errors(tmp_path):
    result = CliRunner().invoke(deploy, ["render", "claims-svc", "--version", "3",
                                         "--model-uri", URI, "--canary-traffic", "10"])
    assert isinstance(result.exception, DataError)  # main's group turns it into exit code 2
    assert "given without a canary version" in str(result.exception)
    result = CliRunner().invoke(deploy, ["render", "c", "--version", "3", "--model-uri", URI,
                                         "--crd", str(tmp_path / "none.yaml")])
    assert isinstance(result.exception, DataError) and "CRD not found at" in str(result.exception)


def test_cli_traffic_parses_weights(monkeypatch):
    seen = {}

    def fake(name, namespace, weights):
        seen.update(name=name, namespace=namespace, weights=weights)
        return {"spec": {"predictors": [{"name": k, "traffic": v} for k, v in weights.items()]}}

    monkeypatch.setattr("mleops.deploy.apply.set_traffic", fake)
    result = CliRunner().invoke(deploy, ["traffic", "claims-svc", "main=70", "canary=30"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"main": 70, "canary": 30}
    assert seen == {"name": "claims-svc", "namespace": "models",
                    "weights": {"main": 70, "canary": 30}}
    result = CliRunner().invoke(deploy, ["traffic", "claims-svc", "main:70"])
    assert isinstance(result.exception, DataError)


# --- modelUri from a real MLflow registry ---------------------------------------------------------
@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Embedded sqlite registry with model 'claims' versions 1 and 2 (artifacts under tmp)."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the sqlite store keeps artifacts under ./mlruns
        reg = Registry(f"sqlite:///{root}/m.db", retries=1)
        for seed in (0, 1):
            res = mleops.fit(np.random.default_rng(seed).gamma(2.0, 1.5, 200), "gamma")
            run = reg.log_training_run(experiment="deploy", params={}, metrics={},
                                       artifact=ModelArtifact.from_fit(res))
            reg.register("claims", run, tags={})
    return reg


@pytest.mark.slow
def test_model_artifact_uri_points_at_model_json(registry):
    for version in ("1", 2):
        uri = model_artifact_uri(registry, "claims", version)
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        assert os.path.isfile(os.path.join(path, "artifacts", "model.json"))
        art = ModelArtifact.load(os.path.join(path, "artifacts"))
        assert art.params == registry.load_version("claims", version)[1].params
    assert model_artifact_uri(registry, "claims", 1) != model_artifact_uri(registry, "claims", 2)
    with pytest.raises(RegistryError, match="has no version '9'"):
        model_artifact_uri(registry, "claims", 9)


def test_model_artifact_uri_maps_proxied_artifacts(registry, monkeypatch):
    proxied = "mlflow-artifacts:/1/models/m-abc/artifacts"
    monkeypatch.setattr(registry.client, "get_model_version_download_uri", lambda n, v: proxied)
    assert (model_artifact_uri(registry, "claims", 1, artifacts_destination="s3://b/mlartifacts/")
            == "s3://b/mlartifacts/1/models/m-abc/artifacts")
    with pytest.raises(DataError, match="stored behind the tracking server"):
        model_artifact_uri(registry, "claims", 1)


@needs_crd
def test_cli_render_looks_the_versions_up_in_mlflow(registry):
    result = CliRunner().invoke(deploy, [
        "render", "claims-svc", "--model-name", "claims", "--version", "1", "--canary-version",
        "2", "--canary-traffic", "20", "--tracking-uri", registry.uri, "--crd", str(CRD)])
    assert result.exit_code == 0, result.output
    m = yaml.safe_load(result.stdout)
    assert [p["graph"]["modelUri"] for p in m["spec"]["predictors"]] == [
        model_artifact_uri(registry, "claims", v) for v in (1, 2)]
    assert [p["traffic"] for p in m["spec"]["predictors"]] == [80, 20]


def test_cli_render_apply_uses_the_cluster(monkeypatch):
    api = RecordingApi(get_namespaced_custom_object=[_api_error(404, "Not Found")],
                       create_namespaced_custom_object=[{"metadata": {"resourceVersion": "7"}}])
    monkeypatch.setattr("mleops.deploy.apply.custom_objects_api", lambda: api)
    result = CliRunner().invoke(deploy, ["render", "claims-svc", "--version", "3", "--model-uri",
                                         URI, "--no-validate", "--apply"])
    assert result.exit_code == 0, result.output
    assert "applied SeldonDeployment models/claims-svc (resourceVersion 7)" in result.stderr
    assert [c[0] for c in api.calls] == ["get_namespaced_custom_object",
                                         "create_namespaced_custom_object"]
    assert api.calls[1][1]["body"] == yaml.safe_load(result.stdout)


def test_no_cluster_configuration_is_a_deploy_error(monkeypatch, tmp_path):
    from mleops.deploy import custom_objects_api

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(DeployError, match="no Kubernetes configuration: kubeconfig: .* in-cluster"):
        custom_objects_api()
