"""Create or update SeldonDeployments, and shift traffic between their predictors.

Talks to the cluster through the kubernetes client's ``CustomObjectsApi`` (pass ``api`` to use
another one, e.g. a test double). Failures become :class:`DeployError` naming the object,
what was being done, and the API server's own message.
"""

from __future__ import annotations

import copy
import json

from mleops.deploy.seldon import API_VERSION, GROUP, KIND, PLURAL
from mleops.errors import DataError, MleopsError

OWNED_PREFIX = "mleops.io/"  # labels/annotations manifests own (stale ones are removed)


class DeployError(MleopsError, RuntimeError):
    """The cluster could not be reached or refused a request; the message says which and why."""


def custom_objects_api():
    """A ``CustomObjectsApi`` from ~/.kube/config ($KUBECONFIG), else the in-cluster account."""
    from kubernetes import client, config

    try:
        config.load_kube_config()
    except Exception as local:
        try:
            config.load_incluster_config()
        except Exception as incluster:
            raise DeployError(f"no Kubernetes configuration: kubeconfig: {local}; in-cluster: "
                              f"{incluster}") from incluster
    return client.CustomObjectsApi()


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


def get_object(api, namespace: str, name: str) -> dict | None:
    """The SeldonDeployment, or None when it does not exist."""
    from kubernetes.client.exceptions import ApiException

    try:
        return _request(f"reading {KIND} {namespace}/{name}", api.get_namespaced_custom_object,
                        group=GROUP, version=API_VERSION, namespace=namespace, plural=PLURAL,
                        name=name)
    except DeployError as e:
        if isinstance(e.__cause__, ApiException) and e.__cause__.status == 404:
            return None
        raise


def patch_object(api, namespace: str, name: str, body: dict, what: str) -> dict:
    """Merge-patch the SeldonDeployment (``what`` names the change in errors)."""
    return _request(f"{what} on {KIND} {namespace}/{name}", api.patch_namespaced_custom_object,
                    group=GROUP, version=API_VERSION, namespace=namespace, plural=PLURAL,
                    name=name, body=body)


def _merge_patch(manifest: dict, current: dict) -> dict:
    """``manifest`` as a JSON merge patch over ``current``: mleops-owned labels/annotations
    that the manifest no longer has (e.g. the canary version) are deleted (set to null)."""
    body = copy.deepcopy(manifest)
    for key in ("labels", "annotations"):
        old = (current.get("metadata") or {}).get(key) or {}
        new = body.setdefault("metadata", {}).get(key) or {}
        stale = {k: None for k in old if k.startswith(OWNED_PREFIX) and k not in new}
        if stale:
            body["metadata"][key] = {**new, **stale}
    return body


def apply_manifest(manifest: dict, *, api=None) -> dict:
    """Create the SeldonDeployment, or merge-patch it if it exists; the object the server keeps.

    The predictors list is replaced as a whole (merge-patch semantics), so the result serves
    exactly the manifest's predictors.
    """
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND \
            or manifest.get("apiVersion") != f"{GROUP}/{API_VERSION}":
        got = (f"{manifest.get('apiVersion')}/{manifest.get('kind')}"
               if isinstance(manifest, dict) else type(manifest).__name__)
        raise DataError(f"not a {GROUP}/{API_VERSION} {KIND} manifest ({got})")
    meta = manifest.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if not name or not namespace:
        raise DataError("manifest needs metadata.name and metadata.namespace")
    api = api or custom_objects_api()
    ref = dict(group=GROUP, version=API_VERSION, namespace=namespace, plural=PLURAL)
    current = get_object(api, namespace, name)
    if current is None:
        return _request(f"creating {KIND} {namespace}/{name}",
                        api.create_namespaced_custom_object, body=manifest, **ref)
    return _request(f"updating {KIND} {namespace}/{name}", api.patch_namespaced_custom_object,
                    name=name, body=_merge_patch(manifest, current), **ref)


def get_traffic(name: str, namespace: str, *, api=None) -> dict[str, int]:
    """Predictor name -> traffic percentage (a shadow's is its mirrored share)."""
    api = api or custom_objects_api()
    current = get_object(api, namespace, name)
    if current is None:
        raise DeployError(f"no {KIND} {namespace}/{name}")
    return {p["name"]: int(p.get("traffic", 0))
            for p in (current.get("spec") or {}).get("predictors") or []}


def set_traffic(name: str, namespace: str, weights: dict[str, int], *, api=None,
                attempts: int = 3) -> dict:
    """Set the ``traffic`` of the named predictors; the updated object.

    Non-shadow predictors must end up summing to 100 (unnamed ones keep their share); a
    shadow's value is its mirrored percentage. A merge patch replaces lists whole, so the patch
    carries the current predictors with only ``traffic`` changed, guarded by the object's
    ``resourceVersion``: if the object changed meanwhile (HTTP 409) it is re-read and the
    change retried, up to ``attempts`` times. Nothing is sent when nothing would change.
    """
    if attempts < 1:
        raise DataError(f"attempts must be >= 1, got {attempts}")
    if not isinstance(weights, dict) or not weights:
        raise DataError("weights must be a non-empty mapping predictor -> percentage")
    for pred, w in weights.items():
        if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 100:
            raise DataError(f"traffic for predictor {pred!r} must be an integer in 0..100, "
                            f"got {w!r}")
    from kubernetes.client.exceptions import ApiException

    api = api or custom_objects_api()
    where = f"{KIND} {namespace}/{name}"
    for attempt in range(1, attempts + 1):
        current = get_object(api, namespace, name)
        if current is None:
            raise DeployError(f"no {where}")
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
        if predictors == before:
            return current
        body = {"spec": {"predictors": predictors}}
        if version := (current.get("metadata") or {}).get("resourceVersion"):
            body["metadata"] = {"resourceVersion": version}  # precondition: 409 if changed
        try:
            return _request(f"setting traffic {weights} on {where}",
                            api.patch_namespaced_custom_object, group=GROUP,
                            version=API_VERSION, namespace=namespace, plural=PLURAL,
                            name=name, body=body)
        except DeployError as e:
            conflict = isinstance(e.__cause__, ApiException) and e.__cause__.status == 409
            if not conflict or attempt == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
