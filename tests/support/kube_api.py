"""A Kubernetes API server stub on 127.0.0.1 for ConfigMaps: the real ``kubernetes`` client
talks HTTP to it, and it records every request (method, path, content type, body).

It answers EndpointSlice lists by ``kubernetes.io/service-name`` from ``slices``, and keeps
ConfigMaps in memory with the API's semantics that mleops relies on: GET of a
missing one is 404, POST of an existing one 409, PATCH (merge or strategic merge of ``data``)
of a missing one 404; ``forbid`` makes every call 403, as for a service account without RBAC.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from support.http import reply_json, serving

ONE = re.compile(r"^/api/v1/namespaces/([a-z0-9-]+)/configmaps/([a-z0-9.-]+)$")
ALL = re.compile(r"^/api/v1/namespaces/([a-z0-9-]+)/configmaps$")
SLICES = re.compile(r"^/apis/discovery.k8s.io/v1/namespaces/([a-z0-9-]+)/endpointslices$")
PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message}


@dataclass
class KubeStub:
    url: str = ""
    forbid: bool = False
    configmaps: dict[tuple[str, str], dict] = field(default_factory=dict)
    #: (namespace, service) -> [(port, [(address, ready)])]: one EndpointSlice each
    slices: dict[tuple[str, str], list] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def api(self):
        """A real ``CoreV1Api`` pointed at this stub."""
        from kubernetes import client

        cfg = client.Configuration(host=self.url)
        return client.CoreV1Api(client.ApiClient(cfg))

    def api_discovery(self):
        """A real ``DiscoveryV1Api`` pointed at this stub."""
        from kubernetes import client

        return client.DiscoveryV1Api(client.ApiClient(client.Configuration(host=self.url)))

    def _slices(self, namespace: str, query: str) -> dict:
        from urllib.parse import parse_qs

        selector = parse_qs(query).get("labelSelector", [""])[0]
        service = selector.removeprefix("kubernetes.io/service-name=")
        items = [{"metadata": {"name": f"{service}-{i}", "namespace": namespace,
                               "labels": {"kubernetes.io/service-name": service}},
                  "addressType": "IPv4",
                  "ports": [{"name": "http1", "port": port, "protocol": "TCP"},
                            {"name": "h2c", "port": port + 1, "protocol": "TCP"}],
                  "endpoints": [{"addresses": [a], "conditions": {"ready": ready}}
                                for a, ready in eps]}
                 for i, (port, eps) in enumerate(self.slices.get((namespace, service), []))]
        return {"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": "1"}, "items": items}

    def handle(self, method: str, path: str, ctype: str, body,
               query: str = "") -> tuple[int, dict]:
        self.requests.append({"method": method, "path": path, "content_type": ctype,
                              "body": body, "query": query})
        if self.forbid:
            return 403, _status(403, "Forbidden", f'configmaps is forbidden: User "system:'
                                f'serviceaccount:models:default" cannot {method.lower()} '
                                f'resource "configmaps"')
        if (m := SLICES.match(path)) and method == "GET":
            return 200, self._slices(m.group(1), query)
        if m := ONE.match(path):
            key = m.groups()
            cm = self.configmaps.get(key)
            if cm is None:
                return 404, _status(404, "NotFound", f'configmaps "{key[1]}" not found')
            if method == "GET":
                return 200, cm
            if method == "PATCH":
                if ctype not in PATCH_TYPES:
                    return 415, _status(415, "UnsupportedMediaType", ctype)
                cm.setdefault("data", {}).update(body.get("data") or {})
                cm["metadata"]["resourceVersion"] = str(
                    int(cm["metadata"]["resourceVersion"]) + 1)
                return 200, cm
        if (m := ALL.match(path)) and method == "POST":
            ns = m.group(1)
            name = (body.get("metadata") or {}).get("name", "")
            if (ns, name) in self.configmaps:
                return 409, _status(409, "AlreadyExists", f'configmaps "{name}" already exists')
            if body.get("kind") != "ConfigMap" or not all(
                    isinstance(v, str) for v in (body.get("data") or {}).values()):
                return 422, _status(422, "Invalid", "not a ConfigMap with string data")
            cm = {**body, "metadata": {**body["metadata"], "namespace": ns,
                                       "resourceVersion": "1"}}
            self.configmaps[(ns, name)] = cm
            return 201, cm
        return 404, _status(404, "NotFound", f"no route {method} {path}")


@contextlib.contextmanager
def kube_stub(**kw) -> Iterator[KubeStub]:
    """A running stub; stopped on exit."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 30

        def _serve(self, method: str) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            with stub.lock:
                path, _, query = self.path.partition("?")
                code, out = stub.handle(method, path, self.headers.get("Content-Type", ""),
                                        json.loads(raw) if raw else None, query)
            reply_json(self, code, out)

        def do_GET(self):  # noqa: N802
            self._serve("GET")

        def do_POST(self):  # noqa: N802
            self._serve("POST")

        def do_PATCH(self):  # noqa: N802
            self._serve("PATCH")

        def log_message(self, *args):
            pass

    with serving(Handler) as server:
        stub = KubeStub(url=f"http://127.0.0.1:{server.server_address[1]}", **kw)
        yield stub
