"""The router on its own, in front of two tiny HTTP upstreams that answer like a Seldon model
server, or an OIP v2 one when asked in v2 (loglik = a constant per upstream, or failures on
demand): exact split, retries that hide canary failures, shadow pairing, the record cursor,
and bad admin input. Real model servers behind it: tests/test_rollout_local.py."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mleops.rollout.backends.local.http import RouterServer
from mleops.rollout.backends.local.router import Router, Upstream
from mleops.rollout.backends.local.wire import OipV2


class Upstream_:
    """Answers each row with ``value``; ``mode`` = ok | 500 | 400-support | 400."""

    def __init__(self, value):
        self.value, self.mode, self.hits, self.paths = value, "ok", 0, []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):  # OIP model metadata
                body = json.dumps({"name": "lat", "versions": [str(outer.value)]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                outer.hits += 1
                outer.paths.append(self.path)
                rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "inputs" in rows:  # OIP v2
                    n = rows["inputs"][0]["shape"][0]
                    status, doc = 200, {"model_name": "lat", "outputs": [{
                        "name": "loglik", "datatype": "FP64", "shape": [n],
                        "data": [outer.value] * n}]}
                else:
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


@pytest.fixture(params=["v1"])
def plane(request):
    champion, canary = Upstream_(-1.0), Upstream_(-2.0)
    wire = OipV2("lat") if request.param == "v2" else None
    router = Router(Upstream(champion.url, "1"), wire=wire)
    router.set_canary(Upstream(canary.url, "2"))
    server = RouterServer(router).start()
    global ADMIN
    ADMIN = (server.admin_url, server.token)
    yield router, server.url, champion, canary
    server.stop()
    champion.stop()
    canary.stop()


ADMIN = ("", "")


def _post(url, doc, path="/api/v1.0/predictions", method="POST", headers=None):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    if path.startswith("/admin"):  # the admin API: its own port, a token
        url = ADMIN[0]
        headers = {"Authorization": f"Bearer {ADMIN[1]}", **(headers or {})}
    req = urllib.request.Request(url + path, data=data if method != "GET" else None,
                                 method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


ROWS = {"data": {"names": ["x"], "ndarray": [[1.0], [2.0], [3.0]]}}


V2_ROWS = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "data": [1, 2, 3]}]}


@pytest.mark.parametrize("plane", ["v2"], indirect=True)
def test_an_oip_v2_plane_routes_records_and_refuses_in_oip_terms(plane):
    """The v2 data plane: infer on the model's own path, split exactly, per-row records from
    OIP answers, health and metadata answered, anything else a 4xx with OIP's error JSON."""
    router, url, champion, canary = plane
    router.set_routes(50, "split")
    path = "/v2/models/lat/infer"
    answers = [_post(url, V2_ROWS, path)[1]["outputs"][0]["data"][0] for _ in range(10)]
    assert sorted(answers) == [-2.0] * 5 + [-1.0] * 5
    assert set(champion.paths) | set(canary.paths) == {path}
    records = router.read(0)["records"]
    assert len(records) == 10 and sum("canary" in r for r in records) == 5
    assert records[0].get("canary", records[0].get("champion")) in ([-1.0] * 3, [-2.0] * 3)
    assert _post(url, None, "/v2/health/ready", "GET") == (200, {
        "live": True, "ready": True, "protocol": "v2", "model": "lat"})
    assert _post(url, None, "/v2/models/lat", "GET") == (200, {"name": "lat",
                                                                "versions": ["-1.0"]})
    assert _post(url, None, "/v2/models", "GET")[0] == 200  # what `mleops predict` asks first
    for bad_path in ("/v2/models/other/infer", "/v2/models/lat/versions/2/infer",
                     "/api/v1.0/predictions"):
        status, doc = _post(url, V2_ROWS, bad_path)
        assert status == 404 and "POST /v2/models/lat/infer" in doc["error"], doc
    for bad in ({"inputs": []}, {"data": {"ndarray": [[1.0]]}}, [1],
                {"inputs": [{"name": "x", "shape": [1], "data": [1]}]}):
        status, doc = _post(url, bad, path)
        assert status == 400 and "not an OIP inference request" in doc["error"], (bad, doc)
    status, doc = _post(url, {"inputs": [{"name": "x", "datatype": "FP64",
                                          "shape": [10**6], "data": [1]}]}, path)
    assert status == 413 and "limit" in doc["error"]
    assert router.snapshot()["client_errors"] == 5
    assert champion.hits + canary.hits == 10  # nothing refused reached a model server


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


@pytest.mark.parametrize("mode", ["400", "500"])
def test_what_both_versions_refuse_is_not_blamed_on_the_canary(plane, mode):
    """A request the champion fails too (a client error, or a fault both share: 80 such
    requests once rolled a good canary back) is no evidence against the canary."""
    router, url, champion, canary = plane
    champion.mode = canary.mode = mode
    router.set_routes(100, "split")
    for _ in range(80):
        status, body = _post(url, ROWS)
        assert status == int(mode)
    stats = router.snapshot()
    assert stats["stats"]["2"]["errors"] == 0 and stats["client_errors"] == 80


def test_malformed_requests_reach_neither_version(plane):
    router, url, champion, canary = plane
    router.set_routes(100, "split")
    for bad in ({"data": {"ndarray": [[1.0], [1.0, 2.0]]}}, {"data": [1, 2]}, [1],
                {"data": {"tensor": {"shape": [1_000_000_000, 1], "values": [1.0]}}}):
        status, body = _post(url, bad)
        assert 400 <= status < 500 and body["status"]["info"], body
    assert champion.hits == canary.hits == 0
    assert router.snapshot()["client_errors"] == 4


def test_data_plane_takes_json_only_from_a_loopback_host(plane):
    router, url, champion, canary = plane
    router.set_routes(100, "split")
    form = b"json=" + json.dumps(ROWS).encode()
    status, body = _post(url, form, headers={"Content-Type": "application/x-www-form-"
                                                             "urlencoded"})
    assert status == 415 and "Content-Type header must be application/json" in \
        body["status"]["info"]
    status, body = _post(url, ROWS, headers={"Host": "evil.example"})
    assert status == 403 and "Host header 'evil.example'" in body["status"]["info"]
    assert _post(url, ROWS, "/api/v1.0/predictions", "GET")[0] == 405
    assert champion.hits == canary.hits == 0
    status, body = _post(url, {"weight": 100}, "/admin/routes".replace("/admin", ""), "PUT")
    assert status == 405


def test_admin_api_is_apart_and_needs_its_token(plane):
    router, url, *_ = plane
    admin, token = ADMIN
    assert admin != url
    req = urllib.request.Request(url + "/admin/routes", headers={"Content-Type":
                                                                 "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:  # not on the data plane
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 404
    for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                            ({"Authorization": f"Bearer {token}", "Host": "evil"}, 403),
                            ({"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
                             415)):
        for method, path in (("GET", "/admin/routes"), ("GET", "/admin/stats"),
                             ("GET", "/admin/rows"), ("PUT", "/admin/routes"),
                             ("POST", "/admin/promote"), ("DELETE", "/admin/canary")):
            req = urllib.request.Request(admin + path, method=method,
                                         data=b'{"weight": 100}' if method != "GET" else None,
                                         headers={"Content-Type": "application/json",
                                                  **headers})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == status, (headers, method, path)
    assert router.routes()["weight"] == 0 and router.canary is not None


def _raw(url, data: bytes, *, half_close=True, timeout=30) -> bytes:
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize("value", ["\u00b2", "-1", "1e3"])
def test_malformed_content_length_gets_an_answer(plane, value):
    router, url, *_ = plane
    head = (f"POST /api/v1.0/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            f"application/json\r\nContent-Length: {value}\r\n\r\n{{}}").encode()
    assert _raw(url, head).startswith(b"HTTP/1.1 400")
    assert _post(url, ROWS)[0] == 200


def test_short_body_and_slow_clients_are_cut_off(plane, monkeypatch):
    import socket
    import urllib.parse

    router, url, *_ = plane
    body = json.dumps(ROWS).encode()
    head = (f"POST /api/v1.0/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body) + 5}\r\n\r\n").encode()
    answer = _raw(url, head + body)
    assert answer.startswith(b"HTTP/1.1 400") and b"shorter than its Content-Length" in answer
    from mleops.serving.httpd import JsonHandler

    monkeypatch.setattr(JsonHandler, "timeout", 0.5)
    parts = urllib.parse.urlsplit(url)
    slow = [socket.create_connection((parts.hostname, parts.port), timeout=10)
            for _ in range(20)]
    try:
        for s in slow:
            s.sendall(head)  # and never the body
        assert _post(url, ROWS)[0] == 200  # the others are served meanwhile
        for s in slow:
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    finally:
        for s in slow:
            s.close()


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
    assert status == 413 and "exceeds" in body["status"]["info"]
    big = {"data": {"ndarray": [[1.0]] * 400_000}}  # ~3 MB: more than a socket buffer
    status, body = _post(url, big)
    assert status == 413 and "exceeds" in body["status"]["info"]
    assert _post(url, ROWS)[0] == 200  # and the router stays up


def test_replay_sends_the_columns_the_model_takes(tmp_path):
    from mleops.errors import DataError
    from mleops.rollout.backends.local.replay import load_rows

    path = tmp_path / "live.csv"
    path.write_text("latency_ms,age,event\n1.5,30,1\n2.5,40,0\n")
    rows, names = load_rows(str(path), covariates=["const", "age"])
    assert names == ["x", "age", "event"] and rows[:, 0].tolist() == [1.5, 2.5]
    rows, names = load_rows(str(path), columns=["latency_ms"])
    assert names == ["x", "event"]
    two = tmp_path / "two.csv"
    two.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"which column is the response\? numeric columns "
                                        r"\['a', 'b'\]"):
        load_rows(str(two))
    with pytest.raises(DataError, match=r"no column\(s\) \['age'\]"):
        load_rows(str(two), columns=["a"], covariates=["age"])
