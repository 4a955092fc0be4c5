"""The fleet canary's data plane as a fleet rollout sees it: one server's per-key counters
(``GET /v2/models/{name}/evidence``, :mod:`mleops.serving.fleet_tally`) and the routing file
that server re-reads (:mod:`mleops.serving.fleet_canary`; a ConfigMap on a cluster)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from mleops.errors import DataError, RolloutError
from mleops.rollout.backends.fleet_configmap import ConfigMapRouting, is_configmap
from mleops.serving.fleet_canary import Routing, RoutingFile, write_routing
from mleops.serving.fleet_tally import values

MAX_BYTES = 64 << 20  # 10,000 keys are ~1.3 MB of JSON: far more than that is not a tally


class EvidenceUnavailable(RolloutError):
    """The server did not answer its counters this time (no evidence this tick)."""


class FleetServer:
    """Reads ``evidence_url`` and writes ``routing_path``."""

    def __init__(self, evidence_url: str, routing_path: str, *, timeout_s: float = 10.0,
                 api=None):
        self.evidence_url, self.routing_path, self.timeout_s = (
            evidence_url, routing_path, float(timeout_s))
        # a file the server re-reads, or on a cluster the ConfigMap its pod mounts
        self._configmap = ConfigMapRouting(routing_path, api=api) \
            if is_configmap(routing_path) else None

    def read(self, n_keys: int | None, version: str) -> dict[str, Any]:
        """The counters, checked to be this rollout's candidate (``version``, ``n_keys``;
        None: whatever it has, the first read)."""
        try:
            with urllib.request.urlopen(self.evidence_url, timeout=self.timeout_s) as r:
                body = r.read(MAX_BYTES + 1)
        except (OSError, urllib.error.URLError) as e:
            raise EvidenceUnavailable(f"fleet evidence at {self.evidence_url}: {e}") from e
        if len(body) > MAX_BYTES:
            raise DataError(f"fleet evidence at {self.evidence_url} is over {MAX_BYTES} bytes")
        try:
            doc = json.loads(body)
            values(doc)  # decodes and checks every arm
            ok = n_keys in (None, doc["keys"])
        except (ValueError, KeyError, TypeError, DataError) as e:
            raise DataError(f"fleet evidence at {self.evidence_url} is not a tally: {e}") from e
        if not ok:
            raise DataError(f"fleet evidence at {self.evidence_url} covers {doc['keys']} keys; "
                            f"this rollout's candidate has {n_keys}")
        if str(doc.get("version", "")) != str(version):
            raise DataError(f"the server at {self.evidence_url} canaries version "
                            f"{doc.get('version')!r}, not {version!r}")
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


__all__ = ["EvidenceUnavailable", "FleetServer"]
