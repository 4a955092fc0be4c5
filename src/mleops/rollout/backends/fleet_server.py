"""The fleet canary's data plane as a fleet rollout sees it: the servers' per-key counters
(``GET /v2/models/{name}/evidence``, :mod:`mleops.serving.fleet_tally`) and the routing file
they re-read (:mod:`mleops.serving.fleet_canary`; a ConfigMap on a cluster).

The counters are read from one URL, or on a cluster from every ready replica of the
predictor's Service (``endpoints://NAMESPACE/SERVICE[:PORTNAME]/v2/models/NAME/evidence``,
found through its EndpointSlices on every read, so replicas that scale in or out are
followed); each replica counts its own rows and the reads are combined by epoch."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from mleops.errors import DataError, RolloutError
from mleops.rollout.backends.fleet_configmap import ConfigMapRouting, is_configmap
from mleops.serving.fleet_canary import Routing, RoutingFile, write_routing
from mleops.serving.fleet_tally import combined, values

MAX_BYTES = 64 << 20  # 10,000 keys are ~1.3 MB of JSON: far more than that is not a tally


ENDPOINTS = "endpoints://"  # every ready replica of a Service: endpoints://NS/SERVICE[:PORT]/path


def parse_endpoints(url: str) -> tuple[str, str, str, str]:
    """(namespace, service, port name, path) of ``endpoints://NS/SERVICE[:PORTNAME]/path``."""
    rest = url[len(ENDPOINTS):]
    namespace, _, rest = rest.partition("/")
    target, slash, path = rest.partition("/")
    service, _, port_name = target.partition(":")
    if not (namespace and service and slash and path):
        raise DataError(f"evidence {url!r}: expected endpoints://NAMESPACE/SERVICE[:PORTNAME]"
                        f"/v2/models/NAME/evidence")
    return namespace, service, port_name, "/" + path


class EvidenceUnavailable(RolloutError):
    """The server did not answer its counters this time (no evidence this tick)."""


class FleetServer:
    """Reads ``evidence_url`` and writes ``routing_path``."""

    def __init__(self, evidence_url: str, routing_path: str, *, timeout_s: float = 10.0,
                 api=None, discovery_api=None):
        self.evidence_url, self.routing_path, self.timeout_s = (
            evidence_url, routing_path, float(timeout_s))
        # a file the server re-reads, or on a cluster the ConfigMap its pod mounts
        self._configmap = ConfigMapRouting(routing_path, api=api) \
            if is_configmap(routing_path) else None
        self._endpoints = parse_endpoints(evidence_url) if evidence_url.startswith(
            ENDPOINTS) else None
        self.api = discovery_api  # a DiscoveryV1Api; None: from the kubeconfig

    def read(self, n_keys: int | None, version: str) -> dict[str, Any]:
        """The counters, checked to be this rollout's candidate (``version``, ``n_keys``;
        None: whatever it has, the first read). For ``endpoints://`` every ready replica is
        read and the snapshots combined (:func:`mleops.serving.fleet_tally.combined`); a
        replica that does not answer this time is left out (its rows count next time)."""
        if self._endpoints is None:
            doc = self._read_one(self.evidence_url)
        else:
            snaps, missed = [], []
            for url in self.replica_urls():
                try:
                    snaps.append(self._read_one(url))
                except EvidenceUnavailable as e:
                    missed.append(str(e))
            if not snaps:
                raise EvidenceUnavailable(f"fleet evidence at {self.evidence_url}: no replica "
                                          f"answered" + (f" ({missed[0]})" if missed else
                                                         " (no ready endpoint)"))
            doc = combined(snaps)
        if n_keys not in (None, doc["keys"]):
            raise DataError(f"fleet evidence at {self.evidence_url} covers {doc['keys']} keys; "
                            f"this rollout's candidate has {n_keys}")
        if str(doc.get("version", "")) != str(version):
            raise DataError(f"the server at {self.evidence_url} canaries version "
                            f"{doc.get('version')!r}, not {version!r}")
        return doc

    def replica_urls(self) -> list[str]:
        """The evidence URL of every ready replica the Service's EndpointSlices list."""
        from mleops.deploy.endpoints import ready_endpoints
        from mleops.errors import MleopsError

        namespace, service, port_name, path = self._endpoints
        try:
            found = ready_endpoints(namespace, service, port_name=port_name, api=self.api)
        except MleopsError as e:  # the API server unreachable or refusing: no evidence now
            raise EvidenceUnavailable(f"fleet evidence at {self.evidence_url}: {e}") from e
        return [f"http://{f'[{a}]' if ':' in a else a}:{p}{path}" for a, p in found]

    def _read_one(self, url: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as r:
                body = r.read(MAX_BYTES + 1)
        except (OSError, urllib.error.URLError) as e:
            raise EvidenceUnavailable(f"fleet evidence at {url}: {e}") from e
        if len(body) > MAX_BYTES:
            raise DataError(f"fleet evidence at {url} is over {MAX_BYTES} bytes")
        try:
            doc = json.loads(body)
            values(doc)  # decodes and checks every arm
            int(doc["keys"])
        except (ValueError, KeyError, TypeError, DataError) as e:
            raise DataError(f"fleet evidence at {url} is not a tally: {e}") from e
        return doc

    def route(self, routing: Routing) -> None:
        if self._configmap is not None:
            self._configmap.write(routing)
        else:
            write_routing(self.routing_path, routing)

    def routing(self) -> Routing:
        if self._configmap is not None:
            return self._configmap.current()
        return RoutingFile(self.routing_path).current()


__all__ = ["ENDPOINTS", "EvidenceUnavailable", "FleetServer", "parse_endpoints"]
