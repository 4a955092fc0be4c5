"""SeldonDeployment manifests for mleops model servers, validated against the real CRD.

Predictor ``main`` serves the released version; optional predictor ``canary`` a candidate with
a share of the traffic, or (``shadow``) a mirror of it; both run the model-server image
(``serving/Dockerfile``). Seldon Core v1 fetches ``modelUri`` only for prepackaged servers, so
each pod carries the init container the operator would have injected (storage initializer,
args ``[uri, /mnt/models]``, ``envSecretRefName`` credentials); ``modelUri`` stays in the graph
as the record. MLflow's location of a version holds ``artifacts/model.json``, hence
``model_dir=/mnt/models/artifacts``. In a cluster the operator sets the wrapper's metrics path
to ``/prometheus`` (port 6000): the scrape annotations follow.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from mleops._version import SERVER_IMAGE
from mleops.deploy.k8s import (
    DNS1035,
    DNS1123,
    Resource,
    check,
    check_canary,
    check_release,
    find_crd,
    validate_against_crd,
)

GROUP, API_VERSION, PLURAL = "machinelearning.seldon.io", "v1", "seldondeployments"
KIND = "SeldonDeployment"
SELDON = Resource(GROUP, API_VERSION, PLURAL, KIND)
STORAGE_INITIALIZER_IMAGE = "seldonio/rclone-storage-initializer:1.17.1"
CONTAINER, MAIN, CANARY = "model", "main", "canary"
MOUNT, MODEL_DIR, VOLUME = "/mnt/models", "/mnt/models/artifacts", "model-provision-location"
METRICS_PORT, METRICS_PATH = 6000, "/prometheus"
LABEL_MODEL, LABEL_VERSION = "mleops.io/model", "mleops.io/version"
LABEL_CANARY = "mleops.io/canary-version"
CRD_ENV, CRD_FILE = "MLEOPS_SELDON_CRD", "seldondeployment-crd.yaml"



def _predictor(pname: str, version: str, model_uri: str, traffic: int, shadow: bool,
               c: dict) -> dict:
    """One predictor; ``c`` holds the settings both predictors share."""
    labels = {LABEL_MODEL: c["model_name"], LABEL_VERSION: version}
    probe = lambda path, delay, period: {  # "http": the port Seldon's webhook adds
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"}, "initialDelaySeconds": delay,
        "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3}
    container = {
        "name": CONTAINER, "image": c["image"], "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "MLEOPS_BIND_HOST", "value": "0.0.0.0"}],
        "resources": {"requests": {"cpu": c["cpu"], "memory": c["memory"]},
                      "limits": {"cpu": c["cpu"], "memory": c["memory"]}},
        "readinessProbe": probe("/health/status", 5, 5),  # 503 until the model is loaded
        "livenessProbe": probe("/health/ping", 30, 10),
        "volumeMounts": [{"name": VOLUME, "mountPath": MOUNT, "readOnly": True}]}
    init = {"name": f"{CONTAINER}-model-initializer", "image": c["storage_initializer_image"],
            "args": [model_uri, MOUNT],
            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                          "limits": {"cpu": "1", "memory": "1Gi"}},
            "volumeMounts": [{"name": VOLUME, "mountPath": MOUNT}]}
    params = (("model_dir", "STRING", c["model_dir"]), ("max_rows", "INT", str(c["max_rows"])),
              ("model_name", "STRING", c["model_name"]), ("model_version", "STRING", version))
    graph = {"name": CONTAINER, "type": "MODEL", "endpoint": {"type": "REST"},
             "modelUri": model_uri,
             "parameters": [{"name": n, "type": t, "value": v} for n, t, v in params]}
    if c["env_secret_ref_name"]:
        init["envFrom"] = [{"secretRef": {"name": c["env_secret_ref_name"]}}]
        graph["envSecretRefName"] = c["env_secret_ref_name"]
    pred = {"name": pname, "replicas": c["replicas"], "traffic": traffic, "labels": labels,
            "componentSpecs": [{
                "metadata": {"labels": dict(labels),
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/path": c["metrics_path"],
                                             "prometheus.io/port": str(METRICS_PORT)}},
                "spec": {"initContainers": [init], "containers": [container],
                         "volumes": [{"name": VOLUME, "emptyDir": {}}]}}],
            "graph": graph}
    if shadow:
        pred["shadow"] = True
    return pred


def deployment_name(model_name: str) -> str:
    """The SeldonDeployment serving a registered model, unless told otherwise (DNS-1123)."""
    return model_name.lower().replace("_", "-")


def render_seldon_deployment(
        name: str, *, model_name: str, version: str, model_uri: str,
        canary_version: str | None = None, canary_model_uri: str | None = None,
        canary_traffic: int = 0, shadow: bool = False, namespace: str = "models",
        image: str = SERVER_IMAGE, replicas: int = 1, cpu: str = "500m", memory: str = "1Gi",
        max_rows: int = 10000, model_dir: str = MODEL_DIR,
        env_secret_ref_name: str | None = None,
        storage_initializer_image: str = STORAGE_INITIALIZER_IMAGE,
        metrics_path: str = METRICS_PATH) -> dict:
    """The SeldonDeployment serving ``model_name`` ``version`` (plus an optional canary).

    ``canary_traffic`` is the canary's percentage (main gets the rest); in ``shadow`` mode
    main keeps 100 and the canary receives a mirror: ``canary_traffic`` is then the mirrored
    percentage (0 = every request, Seldon's convention). Raises DataError on bad input.
    """
    longest = 63 - len(CANARY) - 1  # Seldon names services <name>-<predictor>
    check(isinstance(name, str) and len(name) <= longest and bool(DNS1035.fullmatch(name)),
           f"deployment name {name!r} must be a DNS-1035 label of at most {longest} characters "
           f"(lowercase letters, digits, '-'; starting with a letter, ending alphanumeric)")
    model_name, version, model_uri = check_release(
        namespace=namespace, secret=env_secret_ref_name, model_name=model_name,
        version=version, model_uri=model_uri, canary_traffic=canary_traffic,
        replicas=replicas, max_rows=max_rows, cpu=cpu, memory=memory, image=image)
    check(model_dir.startswith(MOUNT + "/") or model_dir == MOUNT,
           f"model_dir {model_dir!r} must lie under {MOUNT}, where the model is downloaded")
    check(metrics_path.startswith("/"), f"metrics_path must start with '/', got {metrics_path!r}")
    check(canary_version is not None or not shadow,
           "shadow mode needs a canary version to mirror traffic to")
    canary_version, canary_model_uri = check_canary(version, canary_version, canary_model_uri,
                                                    canary_traffic)
    common = dict(model_name=model_name, image=image, replicas=replicas, cpu=cpu, memory=memory,
                  max_rows=max_rows, model_dir=model_dir, env_secret_ref_name=env_secret_ref_name,
                  storage_initializer_image=storage_initializer_image, metrics_path=metrics_path)
    main_traffic = 100 if (shadow or canary_version is None) else 100 - canary_traffic
    predictors = [_predictor(MAIN, version, model_uri, main_traffic, False, common)]
    labels = {"app.kubernetes.io/managed-by": "mleops", LABEL_MODEL: model_name,
              LABEL_VERSION: version}
    if canary_version is not None:
        predictors.append(_predictor(CANARY, canary_version, canary_model_uri, canary_traffic,
                                     shadow, common))
        labels[LABEL_CANARY] = canary_version
    return {"apiVersion": f"{GROUP}/{API_VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"predictors": predictors}}


def model_artifact_uri(registry, name: str, version: str | int, *,
                       artifacts_destination: str | None = None) -> str:
    """The ``modelUri`` of ``name`` ``version``: MLflow's location of it (``artifacts/model.json``
    lies under it). A proxied ``mlflow-artifacts:`` URI is mapped onto the tracking server's
    ``artifacts_destination`` (e.g. ``s3://bucket/mlartifacts``); without one, DataError. A
    missing or not READY version: RegistryError."""
    version = str(version)
    uri = registry.download_uri(name, version).rstrip("/")
    if uri.startswith("mlflow-artifacts:"):
        check(bool(artifacts_destination),
               f"model {name!r} version {version} is stored behind the tracking server "
               f"({uri}); pass the server's artifacts destination (e.g. s3://bucket/path) or "
               f"an explicit model URI")
        return f"{artifacts_destination.rstrip('/')}/{urlparse(uri).path.lstrip('/')}"
    return uri


def default_crd_path() -> Path:
    """Where the SeldonDeployment CRD is read from ($MLEOPS_SELDON_CRD overrides)."""
    return find_crd(CRD_ENV, CRD_FILE)


def _seldon_rules(manifest: dict) -> None:
    """Checks Seldon's admission webhook makes (traffic, shadows, graph/container names)."""
    at = "manifest invalid at spec.predictors"
    preds = manifest.get("spec", {}).get("predictors") or []
    names = [p.get("name") for p in preds]
    check(bool(preds), f"{at}: no predictors")
    check(len(set(names)) == len(names), f"{at}: duplicate predictor names {names}")
    live = [p for p in preds if not p.get("shadow")]
    check(len(preds) - len(live) <= 1, f"{at}: more than one shadow predictor")
    check(bool(live), f"{at}: a shadow cannot be the only predictor")
    total = sum(p.get("traffic", 0) for p in live)
    check(total == 100 or (len(live) == 1 and total == 0),
           f"{at}: traffic of the non-shadow predictors sums to {total}, not 100")
    for i, p in enumerate(preds):
        check(0 <= p.get("traffic", 0) <= 100,
               f"{at}[{i}].traffic: {p.get('traffic')} is outside 0..100")
        containers = {c.get("name") for cs in p.get("componentSpecs") or []
                      for c in (cs.get("spec") or {}).get("containers") or []}
        node = (p.get("graph") or {}).get("name")
        check(node in containers, f"{at}[{i}].graph.name: no container named {node!r}")


def validate_manifest(manifest: dict, schema_path: str | os.PathLike | None = None, *,
                      strict: bool = True) -> dict:
    """Check ``manifest`` against the CRD schema and Seldon's webhook rules; returns it.

    DataError names the first failing field as a path (``spec.predictors[0].traffic``).
    """
    validate_against_crd(manifest, schema_path, env=CRD_ENV, filename=CRD_FILE, group=GROUP,
                         version=API_VERSION, kind=KIND, name_pattern=DNS1123,
                         name_rule="DNS-1123", strict=strict)
    _seldon_rules(manifest)
    return manifest
