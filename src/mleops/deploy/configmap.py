"""ConfigMaps mleops keeps (a fleet canary's routing): read one, write one whole.

The writer replaces ``data`` with a merge patch (the keys it names; a ConfigMap mleops owns
has no others) and creates the object when the API says it does not exist, so the first
write of a rollout and every later one are the same call. Errors are DeployErrors naming the
object, as for the custom objects (:mod:`mleops.deploy.apply`).
"""

from __future__ import annotations

from mleops.deploy.apply import DeployError, _request, core_v1_api


def read_configmap(namespace: str, name: str, *, api=None) -> dict[str, str] | None:
    """The ConfigMap's ``data``, or None when it does not exist."""
    from kubernetes.client.exceptions import ApiException

    api = api or core_v1_api()
    try:
        obj = _request(f"reading ConfigMap {namespace}/{name}",
                       api.read_namespaced_config_map, name=name, namespace=namespace)
    except DeployError as e:
        if isinstance(e.__cause__, ApiException) and e.__cause__.status == 404:
            return None
        raise
    data = obj.data if hasattr(obj, "data") else (obj or {}).get("data")
    return dict(data or {})


def write_configmap(manifest: dict, *, api=None) -> None:
    """Patch ``manifest``'s ``data`` onto the ConfigMap it names, creating it if missing."""
    from kubernetes.client.exceptions import ApiException

    api = api or core_v1_api()
    meta = manifest["metadata"]
    name, namespace = meta["name"], meta["namespace"]

    def status(e: DeployError) -> int | None:
        return e.__cause__.status if isinstance(e.__cause__, ApiException) else None

    def patch() -> None:
        _request(f"updating ConfigMap {namespace}/{name}", api.patch_namespaced_config_map,
                 name=name, namespace=namespace, body={"data": manifest["data"]})

    try:
        patch()
    except DeployError as e:
        if status(e) != 404:
            raise
        try:
            _request(f"creating ConfigMap {namespace}/{name}", api.create_namespaced_config_map,
                     namespace=namespace, body=manifest)
        except DeployError as again:
            if status(again) != 409:  # created meanwhile: then the patch applies
                raise
            patch()


__all__ = ["read_configmap", "write_configmap"]
