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

import functools
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from ..errors import DataError

GROUP, API_VERSION, PLURAL = "machinelearning.seldon.io", "v1", "seldondeployments"
KIND = "SeldonDeployment"
SERVER_IMAGE = "ghcr.io/mleops/mleops-server:0.1.0"
STORAGE_INITIALIZER_IMAGE = "seldonio/rclone-storage-initializer:1.18.2"
CONTAINER, MAIN, CANARY = "model", "main", "canary"
MOUNT, MODEL_DIR, VOLUME = "/mnt/models", "/mnt/models/artifacts", "model-provision-location"
METRICS_PORT, METRICS_PATH = 6000, "/prometheus"
LABEL_MODEL, LABEL_VERSION = "mleops.io/model", "mleops.io/version"
LABEL_CANARY = "mleops.io/canary-version"
CRD_ENV, CRD_FILE = "MLEOPS_SELDON_CRD", "seldondeployment-crd.yaml"

_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise DataError(message)


def _label_value(what: str, value: str) -> str:
    value = str(value)
    _check(bool(value) and len(value) <= 63 and _LABEL_VALUE.fullmatch(value) is not None,
           f"{what} {value!r} cannot be a Kubernetes label value (1-63 characters: letters, "
           f"digits, '-', '_', '.', starting and ending with a letter or digit)")
    return value


def _uri(what: str, uri: str | None) -> str:
    _check(isinstance(uri, str) and uri.strip() == uri and uri != "" and " " not in uri,
           f"{what} must be a non-empty URI without spaces, got {uri!r}")
    return uri


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
    _check(isinstance(name, str) and len(name) <= longest and bool(_DNS1035.fullmatch(name)),
           f"deployment name {name!r} must be a DNS-1035 label of at most {longest} characters "
           f"(lowercase letters, digits, '-'; starting with a letter, ending alphanumeric)")
    _check(isinstance(namespace, str) and len(namespace) <= 63
           and bool(_DNS1123.fullmatch(namespace)), f"namespace {namespace!r} is not a DNS-1123 "
           f"label (1-63 lowercase letters, digits, '-'; starting and ending alphanumeric)")
    _check(env_secret_ref_name is None or isinstance(env_secret_ref_name, str)
           and len(env_secret_ref_name) <= 253 and bool(_SUBDOMAIN.fullmatch(env_secret_ref_name)),
           f"env_secret_ref_name {env_secret_ref_name!r} is not a secret name (DNS-1123 subdomain)")
    model_name = _label_value("model name", model_name)
    version = _label_value("model version", version)
    model_uri = _uri("model_uri", model_uri)
    for what, v, low, high in (("canary_traffic", canary_traffic, 0, 100),
                               ("replicas", replicas, 0, 1000), ("max_rows", max_rows, 1, None)):
        _check(isinstance(v, int) and not isinstance(v, bool) and low <= v
               and (high is None or v <= high), f"{what} must be an integer in "
               f"{low}..{high if high is not None else ''}, got {v!r}")
    for what, q in (("cpu", cpu), ("memory", memory)):
        _check(isinstance(q, str) and bool(_QUANTITY.fullmatch(q)),
               f"{what} {q!r} is not a Kubernetes quantity (e.g. 500m, 1, 512Mi, 1Gi)")
    _check(isinstance(image, str) and bool(image) and " " not in image,
           f"image must be a non-empty image reference, got {image!r}")
    _check(model_dir.startswith(MOUNT + "/") or model_dir == MOUNT,
           f"model_dir {model_dir!r} must lie under {MOUNT}, where the model is downloaded")
    _check(metrics_path.startswith("/"), f"metrics_path must start with '/', got {metrics_path!r}")
    if canary_version is None:
        _check(canary_traffic == 0,
               f"canary_traffic={canary_traffic} given without a canary version")
        _check(not shadow, "shadow mode needs a canary version to mirror traffic to")
        _check(canary_model_uri is None, "canary_model_uri given without a canary version")
    else:
        canary_version = _label_value("canary version", canary_version)
        _check(canary_version != version, f"canary version {canary_version} is the version "
                                          f"the main predictor already serves")
        canary_model_uri = _uri("canary_model_uri", canary_model_uri)
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


def to_yaml(manifest: dict) -> str:
    import yaml

    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


def model_artifact_uri(registry, name: str, version: str | int, *,
                       artifacts_destination: str | None = None) -> str:
    """The ``modelUri`` of ``name`` ``version``: MLflow's location of it (``artifacts/model.json``
    lies under it). A proxied ``mlflow-artifacts:`` URI is mapped onto the tracking server's
    ``artifacts_destination`` (e.g. ``s3://bucket/mlartifacts``); without one, DataError. A
    missing or not READY version: RegistryError."""
    version = str(version)
    with registry._errors(f"locating model {name!r} version {version}"):
        registry._version(name, version, ready=True)
        uri = registry._call(registry.client.get_model_version_download_uri, name, version)
    uri = str(uri).rstrip("/")
    if uri.startswith("mlflow-artifacts:"):
        _check(bool(artifacts_destination),
               f"model {name!r} version {version} is stored behind the tracking server "
               f"({uri}); pass the server's artifacts destination (e.g. s3://bucket/path) or "
               f"an explicit model URI")
        return f"{artifacts_destination.rstrip('/')}/{urlparse(uri).path.lstrip('/')}"
    return uri


# --- validation against the CRD --------------------------------------------------------------
def find_crd(env: str, filename: str) -> Path:
    """$``env``, else the first existing ``shared/schemas/<filename>`` next to or inside the
    repository (or the working directory), else the repository's copy in ``infra/crds/``;
    the first candidate if none."""
    if os.environ.get(env):
        return Path(os.environ[env])
    roots = (Path(__file__).resolve().parents[3], Path.cwd())
    candidates = [r / sub / "schemas" / filename for r in roots for sub in ("../shared", "shared")]
    # The repository carries a verbatim copy (infra/crds/) so validation never silently skips.
    candidates += [r / "infra" / "crds" / filename for r in roots]
    return next((c.resolve() for c in candidates if c.is_file()), candidates[0].resolve())


def default_crd_path() -> Path:
    """Where the SeldonDeployment CRD is read from ($MLEOPS_SELDON_CRD overrides)."""
    return find_crd(CRD_ENV, CRD_FILE)


def _to_jsonschema(node, strict: bool):
    """OpenAPI v3 (Kubernetes structural schema) -> JSON Schema draft 7: ``nullable`` allows
    null, ``x-kubernetes-int-or-string`` means integer or string; with ``strict`` an object with
    ``properties`` rejects other keys (as kubectl's strict field validation does; the server
    would prune them silently) unless it preserves unknown fields or embeds a resource."""
    if isinstance(node, list):
        return [_to_jsonschema(n, strict) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("properties", "patternProperties", "definitions"):  # maps name -> schema
            out[k] = {name: _to_jsonschema(sub, strict) for name, sub in v.items()}
        elif not k.startswith("x-kubernetes-") and k not in ("nullable", "description"):
            out[k] = _to_jsonschema(v, strict)
    if node.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    open_ = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-embedded-resource")
    if strict and "properties" in node and "additionalProperties" not in node and not open_:
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


@functools.lru_cache(maxsize=8)
def _crd_schema(path: str, mtime: float, version: str, strict: bool) -> dict:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as f:
        crd = yaml.load(f, Loader=loader)
    for v in (crd or {}).get("spec", {}).get("versions", []):
        if v.get("name") == version:
            return _to_jsonschema(v["schema"]["openAPIV3Schema"], strict)
    raise DataError(f"{path}: no version {version!r} in the CRD")


def crd_schema(path: str | os.PathLike | None = None, *, version: str = API_VERSION,
               strict: bool = True) -> dict:
    """The JSON schema (draft 7) of the CRD's ``version`` (see ``_to_jsonschema``)."""
    p = Path(path) if path is not None else default_crd_path()
    if not p.is_file():
        raise DataError(f"SeldonDeployment CRD not found at {p} (set ${CRD_ENV})")
    return _crd_schema(str(p.resolve()), p.stat().st_mtime, version, strict)


def _seldon_rules(manifest: dict) -> None:
    """Checks Seldon's admission webhook makes (traffic, shadows, graph/container names)."""
    at = "manifest invalid at spec.predictors"
    preds = manifest.get("spec", {}).get("predictors") or []
    names = [p.get("name") for p in preds]
    _check(bool(preds), f"{at}: no predictors")
    _check(len(set(names)) == len(names), f"{at}: duplicate predictor names {names}")
    live = [p for p in preds if not p.get("shadow")]
    _check(len(preds) - len(live) <= 1, f"{at}: more than one shadow predictor")
    _check(bool(live), f"{at}: a shadow cannot be the only predictor")
    total = sum(p.get("traffic", 0) for p in live)
    _check(total == 100 or (len(live) == 1 and total == 0),
           f"{at}: traffic of the non-shadow predictors sums to {total}, not 100")
    for i, p in enumerate(preds):
        _check(0 <= p.get("traffic", 0) <= 100,
               f"{at}[{i}].traffic: {p.get('traffic')} is outside 0..100")
        containers = {c.get("name") for cs in p.get("componentSpecs") or []
                      for c in (cs.get("spec") or {}).get("containers") or []}
        node = (p.get("graph") or {}).get("name")
        _check(node in containers, f"{at}[{i}].graph.name: no container named {node!r}")


def check_object(manifest: dict, api_version: str, kind: str, name_pattern: re.Pattern,
                 name_rule: str, schema: dict) -> None:
    """Kind, name and the CRD's schema (shared by every manifest mleops renders); DataError
    names the first failing field as a path."""
    import jsonschema

    _check(isinstance(manifest, dict), f"manifest must be a mapping, got {type(manifest).__name__}")
    _check(manifest.get("apiVersion") == api_version and manifest.get("kind") == kind,
           f"manifest is {manifest.get('apiVersion')}/{manifest.get('kind')}, not "
           f"{api_version}/{kind}")
    name = (manifest.get("metadata") or {}).get("name")
    _check(isinstance(name, str) and name_pattern.fullmatch(name) is not None and len(name) <= 63,
           f"manifest invalid at metadata.name: {name!r} is not a {name_rule} label")
    validator = jsonschema.Draft7Validator(schema)
    if errors := list(validator.iter_errors(manifest)):
        best = jsonschema.exceptions.best_match(errors)
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in best.absolute_path)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DataError(f"manifest invalid at {where.lstrip('.') or '<root>'}: "
                        f"{best.message}{more}")


def validate_manifest(manifest: dict, schema_path: str | os.PathLike | None = None, *,
                      strict: bool = True) -> dict:
    """Check ``manifest`` against the CRD schema and Seldon's webhook rules; returns it.

    DataError names the first failing field as a path (``spec.predictors[0].traffic``).
    """
    check_object(manifest, f"{GROUP}/{API_VERSION}", KIND, _DNS1123, "DNS-1123",
                 crd_schema(schema_path, strict=strict))
    _seldon_rules(manifest)
    return manifest
