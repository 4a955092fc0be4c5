"""The router on its own, in front of two tiny HTTP upstreams that answer like a Seldon model
server (loglik = a constant per upstream, or failures on demand): exact split, retries that
hide canary failures, shadow pairing, the record cursor, and bad admin input. Real model
servers behind it: tests/test_rollout_local.py."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mleops.rollout.local.http import RouterServer
from mleops.rollout.local.router import Router, Upstream


class Upstream_:
    """Answers each row with ``value``; ``mode`` = ok | 500 | 400-support | 400."""

    def __init__(self, value):
        self.value, self.mode, self.hits = value, "ok", 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                outer.hits += 1
                rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                n = len(rows["data"]["ndarray"])
                status, doc = 200, {"data": {"names": ["loglik"],
                                             "ndarray": [[outer.value]] * n}}
                if outer.mode == "500":
                    status, doc = 500, {"status": {"info": "boom"}}
                elif outer.mode.startswith("400"):
                    info = ("1 value(s) outside the support of lognormal"
                            if outer.mode == "400-support" else "payload must be numeric")
                    status, doc = 400, {"status": {"info": info}}
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def plane():
    champion, canary = Upstream_(-1.0), Upstream_(-2.0)
    router = Router(Upstream(champion.url, "1"))
    router.set_canary(Upstream(canary.url, "2"))
    server = RouterServer(router).start()
    yield router, server.url, champion, canary
    server.stop()
    champion.stop()
    canary.stop()


def _post(url, doc, path="/api/v1.0/predictions", method="POST"):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


ROWS = {"data": {"names": ["x"], "ndarray": [[1.0], [2.0], [3.0]]}}


def test_split_sends_exactly_the_weight(plane):
    router, url, champion, canary = plane
    router.set_routes(25, "split")
    answers = [_post(url, ROWS)[1]["data"]["ndarray"][0][0] for _ in range(40)]
    assert answers.count(-2.0) == 10 and answers.count(-1.0) == 30
    page = router.read(0)
    assert page["next"] == 40 and page["lost"] == 0
    assert sum("canary" in r for r in page["records"]) == 10
    assert all(len(r.get("canary") or r.get("champion")) == 3 for r in page["records"])
    assert router.read(35)["records"][0]["seq"] == 35
    stats = router.snapshot()["stats"]
    assert stats["2"]["requests"] == 10 and stats["2"]["rows"] == 30


@pytest.mark.parametrize("mode, error_kind", [("500", "errors"),
                                              ("400-support", "outside_support")])
def test_canary_failures_are_retried_on_the_champion(plane, mode, error_kind):
    router, url, champion, canary = plane
    canary.mode = mode
    router.set_routes(50, "split")
    statuses = [_post(url, ROWS)[0] for _ in range(10)]
    assert statuses == [200] * 10  # the client never sees the canary fail
    stats = router.snapshot()["stats"]
    assert stats["2"][error_kind] == 5 and stats["1"]["requests"] == 10


def test_dead_canary_is_retried_too(plane):
    router, url, champion, canary = plane
    router.set_routes(100, "split")
    canary.stop()
    assert [_post(url, ROWS)[0] for _ in range(4)] == [200] * 4
    assert router.snapshot()["stats"]["2"]["errors"] == 4


def test_client_errors_are_not_blamed_on_the_canary(plane):
    router, url, champion, canary = plane
    champion.mode = canary.mode = "400"
    router.set_routes(100, "split")
    status, body = _post(url, ROWS)
    assert status == 400 and "numeric" in body["status"]["info"]
    stats = router.snapshot()
    assert stats["stats"]["2"]["errors"] == 0 and stats["client_errors"] == 1


def test_shadow_pairs_rows_and_answers_with_the_champion(plane):
    router, url, champion, canary = plane
    router.set_routes(100, "shadow")
    answers = [_post(url, ROWS)[1]["data"]["ndarray"][0][0] for _ in range(8)]
    assert answers == [-1.0] * 8
    deadline = time.time() + 20  # mirrored calls run after the answer (close() drops queued ones)
    while time.time() < deadline:
        paired = [r for r in router.read(0)["records"] if r.get("paired")]
        if len(paired) == 8:
            break
        time.sleep(0.05)
    assert len(paired) == 8
    assert paired[0]["canary"] == [-2.0] * 3 and paired[0]["champion"] == [-1.0] * 3


def test_admin_input_is_validated(plane):
    router, url, *_ = plane
    assert _post(url, {"weight": 101}, "/admin/routes", "PUT")[0] == 400
    assert _post(url, {"weight": 10, "mode": "blue"}, "/admin/routes", "PUT")[0] == 400
    assert _post(url, b"{not json", "/admin/routes", "PUT")[0] == 400
    assert _post(url, {"version": "3"}, "/admin/canary", "PUT")[0] == 501  # no data plane
    assert _post(url, {}, "/nope")[0] == 404
    router.set_canary(None)
    status, body = _post(url, {"weight": 10}, "/admin/routes", "PUT")
    assert status == 400 and "no canary" in body["error"]
    assert router.routes()["weight"] == 0


def test_oversize_body_is_refused(plane):
    router, url, *_ = plane
    router.max_body_bytes = 100
    status, body = _post(url, {"data": {"ndarray": [[1.0]] * 100}})
    assert status == 413 and "exceeds" in body["error"]
    big = {"data": {"ndarray": [[1.0]] * 400_000}}  # ~3 MB: more than a socket buffer
    status, body = _post(url, big)
    assert status == 413 and "exceeds" in body["error"]
    assert _post(url, ROWS)[0] == 200  # and the router stays up
