"""A fleet canary on a cluster: one InferenceService pod holding both tables, and the routing
ConfigMap it re-reads.

Traffic between deployments cannot be split per key, so a fleet canary is not a KServe
canary: the predictor runs the mleops OIP server with the champion's table at
``/mnt/models/champion`` and the candidate's at ``/mnt/models/candidate``, both fetched by
KServe's storage initializer (``storageUris``: one init container, the credentials of the
service account, as for one model). The per-key split (weight, mode, held keys) is a
ConfigMap mounted at ``/etc/mleops/routing``: the fleet rollout's controller patches it
(:mod:`mleops.rollout.backends.fleet_configmap`), the kubelet swaps the projected file (its
``..data`` symlink) and the server re-reads it on the next request whose file stat changed.

Each replica counts its own per-key evidence (``GET /v2/models/{name}/evidence``): with
more than one, the controller reads every ready replica through the predictor Service's
EndpointSlices (``--server endpoints://NAMESPACE/SERVICE``) and sums them by epoch, so the
replicas are fixed (``minReplicas`` = ``maxReplicas``: an autoscaler's churn would only
lose the rows of replicas removed between two reads). Rows a routing change has not reached
yet are still counted under the arm that answered them, so the lag of a ConfigMap update
(the kubelet's sync period, about a minute) delays a held key, it does not bias any
evidence.
"""

from __future__ import annotations

import json
from typing import Any

from mleops._version import IMAGE
from mleops.deploy.k8s import DNS1123, check
from mleops.deploy.kserve import (
    CONTAINER,
    SERVERLESS,
    render_inference_service,
    validate_inference_service,
)

CHAMPION_DIR, CANDIDATE_DIR = "/mnt/models/champion", "/mnt/models/candidate"
ROUTING_DIR, ROUTING_KEY = "/etc/mleops/routing", "routing.json"
ROUTING_VOLUME = "mleops-routing"
CANARY_ANNOTATION = "mleops.io/fleet-canary-version"
MAX_CONFIGMAP_BYTES = 1 << 20  # the API server's limit on a ConfigMap's data


def fleet_storage_uri(model_uri: str) -> str:
    """Where a registered fleet version's table lies under MLflow's location of the version
    (``model_artifact_uri``): the pyfunc's ``artifacts/fleet`` (fleet.json, fleet.parquet)."""
    return model_uri.rstrip("/") + "/artifacts/fleet"


def routing_configmap_name(name: str) -> str:
    return f"{name}-routing"


def routing_document(weight: int = 0, mode: str = "split", held: list[int] | None = None) -> str:
    """The routing file's JSON, as :class:`mleops.serving.fleet_canary.Routing` reads it."""
    check(isinstance(weight, int) and not isinstance(weight, bool) and 0 <= weight <= 100,
          f"routing weight must be an integer in 0..100, got {weight!r}")
    check(mode in ("split", "shadow"), f"routing mode must be split or shadow, got {mode!r}")
    return json.dumps({"weight": weight, "mode": mode, "held": sorted(set(held or []))})


def routing_configmap(name: str, namespace: str, document: str, *, model_name: str) -> dict:
    """The ConfigMap ``{name}-routing`` holding ``document`` under ``routing.json``."""
    cm = routing_configmap_name(name)
    check(len(cm) <= 253 and DNS1123.fullmatch(cm) is not None,
          f"ConfigMap name {cm!r} is not a DNS-1123 name")
    check(len(document.encode()) < MAX_CONFIGMAP_BYTES,
          f"routing of {len(document.encode())} bytes exceeds a ConfigMap's 1 MiB")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "mleops",
                                    "mleops.io/model": model_name}},
            "data": {ROUTING_KEY: document}}


def render_fleet_canary(
        name: str, *, model_name: str, version: str, model_uri: str, canary_version: str,
        canary_model_uri: str, weight: int = 0, mode: str = "split", namespace: str = "models",
        image: str = IMAGE, replicas: int = 1, cpu: str = "1", memory: str = "2Gi",
        max_rows: int = 10000,
        service_account: str | None = None, deployment_mode: str = SERVERLESS,
        crd: str | None = None) -> list[dict[str, Any]]:
    """[routing ConfigMap, InferenceService]: fleet ``version`` serving with
    ``canary_version``'s table beside it, ``weight`` percent of each key's requests to the
    candidate (``mode`` "shadow": every row answered by the champion, the routed share also
    scored by the candidate). Model URIs are MLflow's locations of the versions
    (``model_artifact_uri``). Both objects are validated (the ISVC against the CRD)."""
    check(str(canary_version) != str(version),
          f"the candidate {canary_version!r} is the champion's version")
    isvc = render_inference_service(
        name, model_name=model_name, version=version, model_uri=model_uri,
        namespace=namespace, image=image, replicas=replicas, cpu=cpu, memory=memory,
        max_rows=max_rows, service_account=service_account, deployment_mode=deployment_mode)
    pred = isvc["spec"]["predictor"]
    check(isinstance(replicas, int) and replicas >= 1,
          f"a fleet canary needs at least one replica, got {replicas!r}")
    pred["minReplicas"] = pred["maxReplicas"] = replicas  # fixed: see the module's docstring
    pred["storageUris"] = [
        {"uri": fleet_storage_uri(model_uri), "mountPath": CHAMPION_DIR},
        {"uri": fleet_storage_uri(canary_model_uri), "mountPath": CANDIDATE_DIR}]
    pred["volumes"] = [{"name": ROUTING_VOLUME,
                        "configMap": {"name": routing_configmap_name(name)}}]
    (container,) = [c for c in pred["containers"] if c["name"] == CONTAINER]
    container["env"] = [e for e in container["env"] if e["name"] != "STORAGE_URI"] + [
        {"name": "MLEOPS_CANARY_VERSION", "value": str(canary_version)}]
    container["args"] = ["--model-dir", CHAMPION_DIR, "--canary-model-dir", CANDIDATE_DIR,
                         "--routing-file", f"{ROUTING_DIR}/{ROUTING_KEY}",
                         *container["args"][2:]]
    container["volumeMounts"] = [{"name": ROUTING_VOLUME, "mountPath": ROUTING_DIR,
                                  "readOnly": True}]
    isvc["metadata"]["annotations"][CANARY_ANNOTATION] = str(canary_version)
    validate_inference_service(isvc, crd)
    cm = routing_configmap(name, namespace, routing_document(weight, mode),
                           model_name=model_name)
    return [cm, isvc]


__all__ = ["CANDIDATE_DIR", "CHAMPION_DIR", "ROUTING_DIR", "ROUTING_KEY", "fleet_storage_uri",
           "render_fleet_canary", "routing_configmap", "routing_configmap_name",
           "routing_document"]
