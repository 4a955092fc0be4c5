"""KServe InferenceService manifests for mleops model servers, validated against the real CRD.

The predictor is a custom container (``kserve-container``) running the mleops Open Inference
Protocol v2 server (:mod:`mleops.serving.oip_launch`): REST v2 and ``/metrics`` on 8080 (the
data-plane port, KServe's first), gRPC (h2c) on 8081. KServe's storage initializer downloads
the container's ``STORAGE_URI`` (how KServe finds a custom container's model, and what its
canary webhook requires) into ``/mnt/models``: the version's MLflow location plus
``/artifacts``, where ``model.json`` lies. Metrics are scraped from the pod at 8080/metrics
(``prometheus.io/*``); KServe's own ``enable-prometheus-scraping`` is switched off because it
would point the scrape at the queue-proxy (port 9091), which Standard mode does not have.

Canary, by deployment mode (``serving.kserve.io/deploymentMode``):

- ``Serverless`` (``Knative``): ``spec.predictor.canaryTrafficPercent``. Knative keeps
  revisions: the predictor spec is the canary's, the latest revision gets the percentage and
  the last revision rolled out at 100% (the champion) the rest. Promotion removes the field;
  rollback sets it to 0 (KServe pins all traffic to the previous revision, also after 100%).
- ``Standard`` (KServe >= 0.20, Gateway API): ``spec.canary[]`` entries, each a named
  predictor (``{isvc}-{name}-predictor``) with ``trafficPercent``. Promotion renames the
  stable predictor to the canary's and drops the entry; rollback drops the entry.
- ``RawDeployment`` (the legacy name of Standard): ``canaryTrafficPercent`` is silently
  ignored there (kserve#5335) and the webhook admits ``spec.canary`` only with the annotation
  ``Standard``: a canary is refused (DeployError).
"""

from __future__ import annotations

import os
import re

from mleops._version import IMAGE
from mleops.deploy.k8s import (
    DNS1035,
    DeployError,
    Resource,
    check,
    check_canary,
    check_release,
    validate_against_crd,
)
from mleops.deploy.seldon import LABEL_MODEL, LABEL_VERSION

GROUP, API_VERSION, PLURAL, KIND = ("serving.kserve.io", "v1beta1", "inferenceservices",
                                    "InferenceService")
ISVC = Resource(GROUP, API_VERSION, PLURAL, KIND)
CONTAINER, MOUNT, HTTP_PORT, GRPC_PORT = "kserve-container", "/mnt/models", 8080, 8081
MODE_ANNOTATION = f"{GROUP}/deploymentMode"
SERVERLESS, KNATIVE, RAW, STANDARD = "Serverless", "Knative", "RawDeployment", "Standard"
MODES = (SERVERLESS, KNATIVE, RAW, STANDARD)
REVISIONS = (SERVERLESS, KNATIVE)  # canaryTrafficPercent is honoured (Knative revisions)
CRD_ENV, CRD_FILE = "MLEOPS_KSERVE_CRD", "kserve-inferenceservice-crd.yaml"
NAME_MAX = 40  # KServe names objects {isvc}-{canary}-predictor and hosts after them
LAUNCH = ["python", "-m", "mleops.serving.oip_launch"]


def predictor_name(version: str) -> str:
    """The Standard-mode predictor serving ``version`` (a DNS label: ``v`` + version)."""
    name = "v" + re.sub(r"[^a-z0-9-]+", "-", str(version).lower()).strip("-")
    check(len(name) <= 20 and bool(DNS1035.fullmatch(name)),
          f"version {version!r} gives no usable predictor name ({name!r})")
    return name


def storage_uri(model_uri: str) -> str:
    """What the storage initializer downloads into /mnt/models: the directory with
    ``model.json`` under MLflow's location of the version (``model_artifact_uri``)."""
    return model_uri.rstrip("/") + "/artifacts"


def canary_field(mode: str) -> str:
    """The spec field that splits traffic in ``mode``; DeployError where none would."""
    if mode in REVISIONS:
        return "canaryTrafficPercent"
    if mode == STANDARD:
        return "canary"
    raise DeployError(f"KServe ignores canaryTrafficPercent in {mode} mode (kserve#5335) and "
                      f"admits spec.canary only in {STANDARD} mode: deploy with "
                      f"--deployment-mode {SERVERLESS} or {STANDARD} (KServe >= 0.20)")


def _predictor(version: str, model_uri: str, c: dict, *, name: str | None = None,
               canary: bool = False) -> dict:
    """One predictor; ``c`` holds the settings champion and canary share."""
    standard = c["mode"] not in REVISIONS

    def probe(path: str, delay: int, period: int) -> dict:
        get = {"path": path, **({"port": HTTP_PORT} if standard else {})}  # Knative: no port
        return {"httpGet": get, "initialDelaySeconds": delay, "periodSeconds": period,
                "timeoutSeconds": 2, "failureThreshold": 3}
    env = {"STORAGE_URI": storage_uri(model_uri), "PROTOCOL": "v2",
           "MLEOPS_BIND_HOST": "0.0.0.0", "MLEOPS_MODEL_NAME": c["model_name"],
           "MLEOPS_MODEL_VERSION": version, "MLEOPS_MAX_ROWS": str(c["max_rows"]),
           "JAX_PLATFORMS": "cpu"}
    ports = [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if standard:  # Knative allows one port per container; Standard exposes the others
        ports.append({"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"})
    container = {
        "name": CONTAINER, "image": c["image"], "imagePullPolicy": "IfNotPresent",
        "command": LAUNCH, "args": ["--model-dir", MOUNT, "--http-port", str(HTTP_PORT),
                                    "--grpc-port", str(GRPC_PORT)],
        "env": [{"name": k, "value": v} for k, v in env.items()], "ports": ports,
        "resources": {"requests": {"cpu": c["cpu"], "memory": c["memory"]},
                      "limits": {"cpu": c["cpu"], "memory": c["memory"]}},
        "readinessProbe": probe("/v2/health/ready", 5, 5),
        "livenessProbe": probe("/v2/health/live", 30, 10)}
    pred = {"minReplicas": c["replicas"],
            "labels": {LABEL_MODEL: c["model_name"], LABEL_VERSION: version},
            "containers": [container]}
    if not canary:  # a Standard canary has fixed replicas: the webhook refuses maxReplicas
        pred["maxReplicas"] = max(c["replicas"], 1)
    if name:
        pred["name"] = name
    if c["service_account"]:
        pred["serviceAccountName"] = c["service_account"]
    return pred


def render_inference_service(
        name: str, *, model_name: str, version: str, model_uri: str,
        canary_version: str | None = None, canary_model_uri: str | None = None,
        canary_traffic: int = 0, namespace: str = "models", image: str = IMAGE,
        replicas: int = 1, cpu: str = "500m", memory: str = "1Gi", max_rows: int = 10000,
        service_account: str | None = None, deployment_mode: str = SERVERLESS) -> dict:
    """The InferenceService serving ``model_name`` ``version`` (plus an optional canary).

    ``model_uri``: MLflow's location of the version (``model_artifact_uri``). With a canary
    in Serverless mode the predictor *is* the canary's (Knative's previous revision serves
    the champion, ``version``), so that manifest assumes the champion is rolled out already.
    Storage credentials come from ``service_account`` (KServe's way). DataError on bad input,
    DeployError for a canary the mode would not split.
    """
    check(isinstance(name, str) and len(name) <= NAME_MAX and bool(DNS1035.fullmatch(name)),
          f"InferenceService name {name!r} must be a DNS-1035 label of at most {NAME_MAX} "
          f"characters (lowercase letters, digits, '-'; starting with a letter)")
    check(deployment_mode in MODES,
          f"deployment mode {deployment_mode!r} is not one of {list(MODES)}")
    model_name, version, model_uri = check_release(
        namespace=namespace, secret=service_account, model_name=model_name, version=version,
        model_uri=model_uri, canary_traffic=canary_traffic, replicas=replicas,
        max_rows=max_rows, cpu=cpu, memory=memory, image=image)
    canary_version, canary_model_uri = check_canary(version, canary_version, canary_model_uri,
                                                    canary_traffic)
    c = dict(model_name=model_name, image=image, replicas=replicas, cpu=cpu, memory=memory,
             max_rows=max_rows, service_account=service_account, mode=deployment_mode)
    named = deployment_mode == STANDARD
    field = canary_field(deployment_mode) if canary_version is not None else None
    if field == "canaryTrafficPercent":
        spec = {"predictor": {**_predictor(canary_version, canary_model_uri, c),
                              "canaryTrafficPercent": canary_traffic}}
    else:
        spec = {"predictor": _predictor(version, model_uri, c,
                                        name=predictor_name(version) if named else None)}
    if field == "canary":
        spec["canary"] = [{"trafficPercent": canary_traffic, "predictor": _predictor(
            canary_version, canary_model_uri, c, name=predictor_name(canary_version),
            canary=True)}]
    annotations = {MODE_ANNOTATION: deployment_mode,
                   f"{GROUP}/enable-prometheus-scraping": "false",
                   "prometheus.io/scrape": "true", "prometheus.io/port": str(HTTP_PORT),
                   "prometheus.io/path": "/metrics",
                   "prometheus.kserve.io/port": str(HTTP_PORT),
                   "prometheus.kserve.io/path": "/metrics"}
    # ISVC labels/annotations reach every revision's pods: nothing version-specific here, so
    # promotion (same predictor, no canary field) creates no new revision
    labels = {"app.kubernetes.io/managed-by": "mleops", LABEL_MODEL: model_name}
    return {"apiVersion": f"{GROUP}/{API_VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "annotations": annotations},
            "spec": spec}


def _kserve_rules(manifest: dict) -> None:
    """What KServe's webhook checks, and what it would silently ignore."""
    at = "manifest invalid at"
    mode = ((manifest.get("metadata") or {}).get("annotations") or {}).get(MODE_ANNOTATION)
    check(mode in MODES, f"{at} metadata.annotations: {MODE_ANNOTATION} must be one of "
                         f"{list(MODES)}, got {mode!r}")
    spec = manifest.get("spec") or {}
    pred = spec.get("predictor") or {}
    containers = [c.get("name") for c in pred.get("containers") or []]
    check(CONTAINER in containers, f"{at} spec.predictor.containers: no {CONTAINER!r}")
    pct = pred.get("canaryTrafficPercent")
    check(pct is None or mode in REVISIONS, f"{at} spec.predictor.canaryTrafficPercent: "
                                            f"ignored in {mode} mode (kserve#5335)")
    check(pct is None or 0 <= pct <= 100,
          f"{at} spec.predictor.canaryTrafficPercent: {pct} is outside 0..100")
    canaries = spec.get("canary") or []
    check(not canaries or mode == STANDARD,
          f"{at} spec.canary: only admitted in {STANDARD} mode, not {mode}")
    names = [(c.get("predictor") or {}).get("name") for c in canaries]
    check(all(names) and len(set(names)) == len(names) and pred.get("name") not in names,
          f"{at} spec.canary: predictor names {names} must be given, unique, and differ from "
          f"the stable predictor's {pred.get('name')!r}")
    check(sum(c.get("trafficPercent", 0) for c in canaries) <= 100,
          f"{at} spec.canary: trafficPercent sums to more than 100")
    check(not any("maxReplicas" in (c.get("predictor") or {}) for c in canaries),
          f"{at} spec.canary: a canary has fixed replicas (no maxReplicas)")


def validate_inference_service(manifest: dict, crd: str | os.PathLike | None = None, *,
                               strict: bool = True) -> dict:
    """Check ``manifest`` against the InferenceService CRD and KServe's webhook rules;
    returns it. DataError names the first failing field as a path."""
    validate_against_crd(manifest, crd, env=CRD_ENV, filename=CRD_FILE, group=GROUP,
                         version=API_VERSION, kind=KIND, name_pattern=DNS1035,
                         name_rule="DNS-1035", strict=strict)
    _kserve_rules(manifest)
    return manifest


__all__ = ["ISVC", "MODES", "RAW", "SERVERLESS", "STANDARD", "canary_field", "predictor_name",
           "render_inference_service", "storage_uri", "validate_inference_service"]
