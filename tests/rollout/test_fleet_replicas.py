"""A fleet canary with several replicas, by contract: the controller finds every ready
replica through the predictor Service's EndpointSlices (a Kubernetes API stub on 127.0.0.1
that the real client talks to), reads each one's counters over HTTP and combines them; a
replica that is not ready is not read, one that does not answer is left out this time."""

from __future__ import annotations

import contextlib
import json
import socket
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from support.http import serving
from support.kube_api import kube_stub

from mleops.errors import DataError
from mleops.rollout.backends.fleet_server import EvidenceUnavailable, FleetServer
from mleops.serving.fleet_tally import KeyTally, advance, increment

PATH = "/v2/models/shop/evidence"


@contextlib.contextmanager
def tally_server(tally: KeyTally):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps(tally.snapshot()).encode() if self.path == PATH else b"{}"
            self.send_response(200 if self.path == PATH else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with serving(Handler) as srv:
        yield srv.server_address[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_ready_replica_is_read_and_combined():
    a, b, unready = KeyTally(3, "4"), KeyTally(3, "4"), KeyTally(3, "4")
    for t, key, n in ((a, 0, 4), (b, 1, 2), (unready, 2, 9)):
        t.add(np.ones(n, int), np.full(n, key), np.full(n, -1.0))
    with tally_server(a) as pa, tally_server(b) as pb, tally_server(unready) as pu, \
            kube_stub() as kube:
        gone = _closed_port()
        kube.slices[("models", "shop-predictor")] = [
            (pa, [("127.0.0.1", True)]), (pb, [("127.0.0.1", None)]),
            (pu, [("127.0.0.1", False)]), (gone, [("127.0.0.1", True)])]
        server = FleetServer(f"endpoints://models/shop-predictor:http1{PATH}", "routing.json",
                             discovery_api=kube.api_discovery(), timeout_s=2)
        assert sorted(server.replica_urls()) == sorted(
            f"http://127.0.0.1:{p}{PATH}" for p in (pa, pb, gone))
        doc = server.read(3, "4")
        assert set(doc["pods"]) == {a.epoch, b.epoch}  # unready not read, gone left out
        assert increment(doc, None)["canary"][3].tolist() == [4, 2, 0]
        b.add(np.ones(3, int), np.full(3, 2), np.full(3, -1.0))
        again = server.read(3, "4")
        assert increment(again, advance(doc, None))["canary"][3].tolist() == [0, 0, 3]
        with pytest.raises(DataError, match="canaries version '4', not '5'"):
            server.read(3, "5")
        (listed,) = {r["query"] for r in kube.requests}
        assert "labelSelector=kubernetes.io%2Fservice-name%3Dshop-predictor" in listed
        kube.slices[("models", "shop-predictor")] = []
        with pytest.raises(EvidenceUnavailable, match="no replica answered"):
            server.read(3, "4")


def test_discovery_refused_is_no_evidence_this_tick_and_bad_addresses_are_refused():
    with kube_stub(forbid=True) as kube:
        server = FleetServer(f"endpoints://models/shop-predictor{PATH}", "routing.json",
                             discovery_api=kube.api_discovery())
        with pytest.raises(EvidenceUnavailable, match="EndpointSlices of Service "
                                                      "models/shop-predictor failed: HTTP 403"):
            server.read(None, "4")
    with pytest.raises(DataError, match="expected endpoints://NAMESPACE/SERVICE"):
        FleetServer("endpoints://models/shop-predictor", "routing.json")
