"""KServe InferenceService manifests checked against the vendored CRD (both modes), the
canary refusals, apply against a recording CustomObjectsApi, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from support.kubernetes import RecordingApi

from mleops.cli.deploy import deploy
from mleops.deploy import (
    DeployError,
    apply_manifest,
    render_inference_service,
    validate_inference_service,
)
from mleops.errors import DataError

URI, CANARY_URI = "s3://models/1/m-aaa", "s3://models/1/m-bbb"
ISVC_REF = dict(group="serving.kserve.io", version="v1beta1", namespace="models",
                plural="inferenceservices")


def _render(**kw):
    return render_inference_service("claims", **{**dict(model_name="claims", version="3",
                                                        model_uri=URI), **kw})


def test_the_packaged_crd_is_the_vendored_one():
    repo = Path(__file__).resolve().parents[2]
    packaged = repo / "src" / "mleops" / "deploy" / "crds" / "kserve-inferenceservice-crd.yaml"
    shared = repo.parent / "shared" / "schemas" / "kserve-inferenceservice-crd.yaml"
    assert packaged.is_file()
    if shared.is_file():
        assert shared.read_bytes() == packaged.read_bytes()


def test_the_predictor_runs_the_v2_server_as_the_contract_says():
    m = validate_inference_service(_render())
    pred = m["spec"]["predictor"]
    (c,) = pred["containers"]
    assert c["name"] == "kserve-container"
    assert c["command"] + c["args"] == ["python", "-m", "mleops.serving.oip_launch",
                                        "--model-dir", "/mnt/models", "--http-port", "8080",
                                        "--grpc-port", "8081"]
    assert {e["name"]: e["value"] for e in c["env"]} == {
        "STORAGE_URI": URI + "/artifacts", "PROTOCOL": "v2", "MLEOPS_BIND_HOST": "0.0.0.0",
        "MLEOPS_MODEL_NAME": "claims", "MLEOPS_MODEL_VERSION": "3", "MLEOPS_MAX_ROWS": "10000",
        "JAX_PLATFORMS": "cpu"}
    assert c["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live"}
    assert pred["labels"] == {"mleops.io/model": "claims", "mleops.io/version": "3"}
    ann = m["metadata"]["annotations"]
    assert ann["serving.kserve.io/deploymentMode"] == "Serverless"
    assert ann["serving.kserve.io/enable-prometheus-scraping"] == "false"
    assert (ann["prometheus.io/scrape"], ann["prometheus.io/port"],
            ann["prometheus.io/path"]) == ("true", "8080", "/metrics")
    assert "canaryTrafficPercent" not in pred and "canary" not in m["spec"]


def test_serverless_canary_is_the_latest_revision_with_its_percentage():
    m = validate_inference_service(_render(canary_version="4", canary_model_uri=CANARY_URI,
                                           canary_traffic=10))
    pred = m["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 10
    assert pred["labels"]["mleops.io/version"] == "4"
    env = {e["name"]: e["value"] for e in pred["containers"][0]["env"]}
    assert env["STORAGE_URI"] == CANARY_URI + "/artifacts"
    assert m["metadata"]["labels"] == _render()["metadata"]["labels"]  # no new revision


def test_standard_canary_is_a_named_spec_canary_entry():
    m = validate_inference_service(_render(canary_version="4", canary_model_uri=CANARY_URI,
                                           canary_traffic=25, deployment_mode="Standard",
                                           replicas=2))
    pred, (canary,) = m["spec"]["predictor"], m["spec"]["canary"]
    assert pred["name"] == "v3" and "canaryTrafficPercent" not in pred
    assert (pred["minReplicas"], pred["maxReplicas"]) == (2, 2)
    assert canary["trafficPercent"] == 25 and canary["predictor"]["name"] == "v4"
    assert "maxReplicas" not in canary["predictor"]
    (c,) = canary["predictor"]["containers"]
    assert [p["name"] for p in c["ports"]] == ["http1", "h2c"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert m["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"


def test_a_canary_rawdeployment_would_ignore_is_refused():
    with pytest.raises(DeployError, match="ignores canaryTrafficPercent in RawDeployment mode"):
        _render(canary_version="4", canary_model_uri=CANARY_URI, canary_traffic=10,
                deployment_mode="RawDeployment")
    validate_inference_service(_render(deployment_mode="RawDeployment"))  # no canary: fine


@pytest.mark.parametrize("breakage, message", [
    (lambda m: m["spec"]["predictor"].update(canaryTrafficPercentage=10),
     "canaryTrafficPercentage"),  # a typo: strict validation names it
    (lambda m: m["spec"]["predictor"].update(minReplicas="one"), "spec.predictor.minReplicas"),
    (lambda m: m["metadata"]["annotations"].update(
        {"serving.kserve.io/deploymentMode": "RawDeployment"}), "canaryTrafficPercent: ignored"),
    (lambda m: m["spec"]["predictor"]["containers"][0].update(name="server"),
     "no 'kserve-container'"),
])
def test_broken_manifests_fail_validation(breakage, message):
    m = _render(canary_version="4", canary_model_uri=CANARY_URI, canary_traffic=10)
    breakage(m)
    with pytest.raises(DataError, match=message):
        validate_inference_service(m)


def test_bad_settings_are_refused():
    with pytest.raises(DataError, match="deployment mode 'Knativ'"):
        _render(deployment_mode="Knativ")
    with pytest.raises(DataError, match="InferenceService name"):
        render_inference_service("Claims", model_name="c", version="1", model_uri=URI)


def test_apply_removes_the_canary_fields_a_champion_manifest_lacks():
    live = _render(canary_version="4", canary_model_uri=CANARY_URI, canary_traffic=10)
    live["metadata"]["resourceVersion"] = "9"
    api = RecordingApi(get_namespaced_custom_object=[live],
                       patch_namespaced_custom_object=[live])
    promoted = _render(version="4", model_uri=CANARY_URI)
    apply_manifest(promoted, api=api)
    (_, get), (method, patch) = api.calls
    assert get == {**ISVC_REF, "name": "claims"} and method == "patch_namespaced_custom_object"
    assert patch["body"]["spec"]["predictor"]["canaryTrafficPercent"] is None
    assert patch["body"]["spec"]["predictor"]["containers"] == \
        promoted["spec"]["predictor"]["containers"]


def test_cli_renders_an_inference_service_without_mlflow(tmp_path):
    out = tmp_path / "isvc.yaml"
    res = CliRunner().invoke(deploy, [
        "render", "claims", "--target", "kserve", "--version", "3", "--model-uri", URI,
        "--canary-version", "4", "--canary-model-uri", CANARY_URI, "--canary-traffic", "10",
        "--deployment-mode", "Standard", "--service-account", "models-s3", "-o", str(out)])
    assert res.exit_code == 0, res.output
    m = yaml.safe_load(out.read_text())
    assert m["kind"] == "InferenceService"
    assert m["spec"]["canary"][0]["trafficPercent"] == 10
    assert m["spec"]["predictor"]["serviceAccountName"] == "models-s3"
    res = CliRunner().invoke(deploy, ["render", "claims", "--target", "kserve", "--version", "3",
                                      "--model-uri", URI, "--shadow"])
    assert res.exit_code == 2 and "--shadow is for --target seldon" in res.output
