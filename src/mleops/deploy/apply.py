"""Create or update the custom objects mleops renders (SeldonDeployment, InferenceService),
and shift traffic between a SeldonDeployment's predictors.

Talks to the cluster through the kubernetes client's ``CustomObjectsApi`` (pass ``api`` to use
another one, e.g. a test double). Failures become :class:`DeployError` naming the object,
what was being done, and the API server's own message. Each call names its object's
:class:`~mleops.deploy.k8s.Resource` (default: the SeldonDeployment); ``apply_manifest``
reads it off the manifest.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

from mleops.deploy.k8s import DeployError, Resource
from mleops.deploy.kserve import ISVC
from mleops.deploy.seldon import SELDON
from mleops.errors import DataError

OWNED_PREFIX = "mleops.io/"  # labels/annotations manifests own (stale ones are removed)
# kinds apply_manifest knows -> whether the manifest owns its whole spec: KServe keeps
# fields such as canaryTrafficPercent until told otherwise (a merge patch must null them);
# Seldon's predictors list is replaced whole anyway and its webhook's defaults are kept
RESOURCES: dict[tuple[str, str], tuple[Resource, bool]] = {
    (r.api_version, r.kind): (r, whole) for r, whole in ((SELDON, False), (ISVC, True))}

__all__ = ["DeployError", "apply_manifest", "core_v1_api", "create_object", "custom_objects_api",
           "discovery_v1_api",
           "get_object", "get_traffic",
           "patch_object", "set_traffic", "update_object"]


def _load_config() -> None:
    """~/.kube/config ($KUBECONFIG), else the in-cluster account; DeployError if neither."""
    from kubernetes import config

    try:
        config.load_kube_config()
    except Exception as local:
        try:
            config.load_incluster_config()
        except Exception as incluster:
            raise DeployError(f"no Kubernetes configuration: kubeconfig: {local}; in-cluster: "
                              f"{incluster}") from incluster


def custom_objects_api():
    """A ``CustomObjectsApi`` from ~/.kube/config ($KUBECONFIG), else the in-cluster account."""
    from kubernetes import client

    _load_config()
    return client.CustomObjectsApi()


def discovery_v1_api():
    """A ``DiscoveryV1Api`` (EndpointSlices), configured as :func:`custom_objects_api`."""
    from kubernetes import client

    _load_config()
    return client.DiscoveryV1Api()


def core_v1_api():
    """A ``CoreV1Api`` (ConfigMaps), configured as :func:`custom_objects_api`."""
    from kubernetes import client

    _load_config()
    return client.CoreV1Api()


def _describe(e) -> str:
    """``HTTP 403 Forbidden: <the API server's message>`` from an ApiException."""
    try:
        message = json.loads(e.body or "{}").get("message", "")
    except (TypeError, ValueError, AttributeError):
        message = str(e.body or "")[:300]
    return f"HTTP {e.status} {e.reason}" + (f": {message}" if message else "")


def _request(what: str, fn, **kwargs):
    """``fn(**kwargs)``; API errors and unreachable servers become DeployError."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn(**kwargs)
    except ApiException as e:
        raise DeployError(f"{what} failed: {_describe(e)}") from e
    except (HTTPError, OSError) as e:
        raise DeployError(f"{what} failed: Kubernetes API server unreachable: {e}") from e


def get_object(api, namespace: str, name: str, *, resource: Resource = SELDON) -> dict | None:
    """The object (a SeldonDeployment unless ``resource`` says otherwise), or None when it
    does not exist."""
    from kubernetes.client.exceptions import ApiException

    try:
        return _request(f"reading {resource.kind} {namespace}/{name}",
                        api.get_namespaced_custom_object, name=name, **resource.ref(namespace))
    except DeployError as e:
        if isinstance(e.__cause__, ApiException) and e.__cause__.status == 404:
            return None
        raise


def patch_object(api, namespace: str, name: str, body: dict, what: str, *,
                 resource: Resource = SELDON) -> dict:
    """Merge-patch the object (``what`` names the change in errors)."""
    return _request(f"{what} on {resource.kind} {namespace}/{name}",
                    api.patch_namespaced_custom_object, name=name, body=body,
                    **resource.ref(namespace))


def create_object(api, namespace: str, body: dict, *, resource: Resource = SELDON) -> dict:
    """Create the object ``body`` describes (DeployError names it and the server's reason)."""
    name = (body.get("metadata") or {}).get("name")
    return _request(f"creating {resource.kind} {namespace}/{name}",
                    api.create_namespaced_custom_object, body=body, **resource.ref(namespace))


def update_object(api, namespace: str, name: str, change: Callable[[dict], dict | None],
                  what: str, *, resource: Resource = SELDON, attempts: int = 3) -> dict:
    """Read the object, merge-patch it with ``change(current)`` (None: nothing to change,
    nothing sent) guarded by its ``resourceVersion``; on a conflict (HTTP 409: it changed
    meanwhile) re-read and retry, up to ``attempts`` times. The updated object."""
    from kubernetes.client.exceptions import ApiException

    if attempts < 1:
        raise DataError(f"attempts must be >= 1, got {attempts}")
    where = f"{resource.kind} {namespace}/{name}"
    for attempt in range(1, attempts + 1):
        current = get_object(api, namespace, name, resource=resource)
        if current is None:
            raise DeployError(f"no {where}")
        body = change(current)
        if body is None:
            return current
        if version := (current.get("metadata") or {}).get("resourceVersion"):
            body["metadata"] = {**body.get("metadata", {}), "resourceVersion": version}
        try:
            return patch_object(api, namespace, name, body, what, resource=resource)
        except DeployError as e:
            conflict = isinstance(e.__cause__, ApiException) and e.__cause__.status == 409
            if not conflict or attempt == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _stale(old: dict, new: dict) -> dict:
    """Nulls for what ``old`` has and ``new`` lacks, nested maps included (lists are
    replaced whole by a merge patch anyway)."""
    out = {}
    for k, v in old.items():
        if k not in new:
            out[k] = None
        elif isinstance(v, dict) and isinstance(new[k], dict) and (sub := _stale(v, new[k])):
            out[k] = sub
    return out


def _deep_merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        base[k] = _deep_merge(base[k], v) if isinstance(base.get(k), dict) \
            and isinstance(v, dict) else v
    return base


def _merge_patch(manifest: dict, current: dict, whole_spec: bool = False) -> dict:
    """``manifest`` as a JSON merge patch over ``current``: mleops-owned labels/annotations
    that the manifest no longer has (e.g. the canary version) are deleted (set to null); with
    ``whole_spec`` so is every spec field the manifest no longer has."""
    body = copy.deepcopy(manifest)
    if whole_spec:
        body["spec"] = _deep_merge(_stale(current.get("spec") or {}, body.get("spec") or {}),
                                   body.get("spec") or {})
    for key in ("labels", "annotations"):
        old = (current.get("metadata") or {}).get(key) or {}
        new = body.setdefault("metadata", {}).get(key) or {}
        stale = {k: None for k in old if k.startswith(OWNED_PREFIX) and k not in new}
        if stale:
            body["metadata"][key] = {**new, **stale}
    return body


def apply_manifest(manifest: dict, *, api=None) -> dict:
    """Create the object, or merge-patch it if it exists; the object the server keeps.

    A SeldonDeployment's predictors list is replaced as a whole (merge-patch semantics), so
    the result serves exactly the manifest's predictors; an InferenceService's spec fields
    the manifest lacks (a canary's ``canaryTrafficPercent``, ``spec.canary``) are removed.
    """
    key = (manifest.get("apiVersion"), manifest.get("kind")) if isinstance(manifest, dict) \
        else None
    if key not in RESOURCES:
        got = "/".join(map(str, key)) if key else type(manifest).__name__
        known = " or ".join(f"{v} {k}" for v, k in RESOURCES)
        raise DataError(f"not a {known} manifest ({got})")
    resource, whole_spec = RESOURCES[key]
    meta = manifest.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if not name or not namespace:
        raise DataError("manifest needs metadata.name and metadata.namespace")
    api = api or custom_objects_api()
    where = f"{resource.kind} {namespace}/{name}"
    current = get_object(api, namespace, name, resource=resource)
    if current is None:
        return create_object(api, namespace, manifest, resource=resource)
    return _request(f"updating {where}", api.patch_namespaced_custom_object, name=name,
                    body=_merge_patch(manifest, current, whole_spec),
                    **resource.ref(namespace))


def get_traffic(name: str, namespace: str, *, api=None) -> dict[str, int]:
    """Predictor name -> traffic percentage (a shadow's is its mirrored share)."""
    api = api or custom_objects_api()
    current = get_object(api, namespace, name)
    if current is None:
        raise DeployError(f"no {SELDON.kind} {namespace}/{name}")
    return {p["name"]: int(p.get("traffic", 0))
            for p in (current.get("spec") or {}).get("predictors") or []}


def set_traffic(name: str, namespace: str, weights: dict[str, int], *, api=None,
                attempts: int = 3) -> dict:
    """Set the ``traffic`` of the named predictors; the updated object.

    Non-shadow predictors must end up summing to 100 (unnamed ones keep their share); a
    shadow's value is its mirrored percentage. A merge patch replaces lists whole, so the patch
    carries the current predictors with only ``traffic`` changed, guarded by the object's
    ``resourceVersion`` (:func:`update_object`: re-read and retried on a conflict). Nothing is
    sent when nothing would change.
    """
    if not isinstance(weights, dict) or not weights:
        raise DataError("weights must be a non-empty mapping predictor -> percentage")
    for pred, w in weights.items():
        if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 100:
            raise DataError(f"traffic for predictor {pred!r} must be an integer in 0..100, "
                            f"got {w!r}")
    where = f"{SELDON.kind} {namespace}/{name}"

    def change(current: dict) -> dict | None:
        before = (current.get("spec") or {}).get("predictors") or []
        predictors = copy.deepcopy(before)
        names = [p["name"] for p in predictors]
        if unknown := sorted(set(weights) - set(names)):
            raise DataError(f"{where} has no predictor(s) {unknown} (it has {names})")
        for p in predictors:
            p["traffic"] = weights.get(p["name"], p.get("traffic", 0))
        live = {p["name"]: p["traffic"] for p in predictors if not p.get("shadow")}
        if sum(live.values()) != 100:
            raise DataError(f"traffic of the non-shadow predictors of {where} would sum to "
                            f"{sum(live.values())}, not 100: {live}")
        return None if predictors == before else {"spec": {"predictors": predictors}}

    return update_object(api or custom_objects_api(), namespace, name, change,
                         f"setting traffic {weights}", attempts=attempts)
