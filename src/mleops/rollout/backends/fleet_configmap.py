"""A fleet canary's routing on a cluster: the ConfigMap its pod mounts
(:func:`mleops.deploy.render_fleet_canary`), named ``configmap://NAMESPACE/NAME`` wherever a
fleet rollout takes a routing file, so the controller's state format stays one string.

The controller writes the whole routing on every tick (weight, mode, held keys: idempotent,
so a resumed controller rewrites what its saved state implies) and reads it back for
``rollout fleet status``; the server sees the change when the kubelet has synced the volume.
"""

from __future__ import annotations

import json

from mleops.deploy.configmap import read_configmap, write_configmap
from mleops.deploy.fleet_canary import ROUTING_KEY
from mleops.deploy.k8s import DNS1123
from mleops.errors import DataError
from mleops.serving.fleet_canary import Routing

SCHEME = "configmap://"


def is_configmap(where: str) -> bool:
    return str(where).startswith(SCHEME)


def parse(where: str) -> tuple[str, str]:
    """(namespace, name) of ``configmap://NAMESPACE/NAME``; DataError otherwise."""
    rest = str(where)[len(SCHEME):] if is_configmap(where) else ""
    namespace, _, name = rest.partition("/")
    if not (DNS1123.fullmatch(namespace or "") and len(namespace) <= 63
            and DNS1123.fullmatch(name or "") and len(name) <= 253):
        raise DataError(f"routing {where!r}: expected configmap://NAMESPACE/NAME (DNS-1123 "
                        f"names)")
    return namespace, name


class ConfigMapRouting:
    """Reads and writes the routing in ConfigMap ``configmap://NAMESPACE/NAME``."""

    def __init__(self, where: str, *, api=None):
        self.namespace, self.name = parse(where)
        self.api = api  # a CoreV1Api; None: from the kubeconfig or the in-cluster account

    def write(self, routing: Routing) -> None:
        write_configmap({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": self.name, "namespace": self.namespace,
                                      "labels": {"app.kubernetes.io/managed-by": "mleops"}},
                         "data": {ROUTING_KEY: json.dumps(routing.to_dict())}}, api=self.api)

    def current(self) -> Routing:
        """What the ConfigMap says (no ConfigMap, or no routing in it: nothing routed)."""
        data = read_configmap(self.namespace, self.name, api=self.api) or {}
        raw = data.get(ROUTING_KEY)
        if not raw:
            return Routing()
        try:
            return Routing.from_dict(json.loads(raw))
        except ValueError as e:
            raise DataError(f"ConfigMap {self.namespace}/{self.name} {ROUTING_KEY}: {e}") \
                from e


__all__ = ["SCHEME", "ConfigMapRouting", "is_configmap", "parse"]
