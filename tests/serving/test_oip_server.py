"""The Open Inference Protocol v2 server (KServe's ModelServer, main environment) over REST
and gRPC, as a real process on 127.0.0.1: same numbers as the engine, the same request
contract as the v1 server (4xx with the OIP error JSON, the server still serving after),
the same Prometheus metrics, loopback binding, and `mleops serve/predict --protocol v2`.
"""

import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from support.http import send as http_send

import mleops
from mleops.artifact import ModelArtifact
from mleops.serving.client import infer, oip_request
from mleops.serving.contract import Limits
from mleops.serving.oip_guard import SERVER_ID_HEADER
from mleops.serving.process import OipServer, free_port, port_free
from mleops.serving.service import stage_model

pytestmark = pytest.mark.slow
MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")
INFER = "/v2/models/latency/infer"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(gamma_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "oip.log"
    os.environ["MLEOPS_READ_TIMEOUT_S"] = "1.5"  # the slow-body case below
    try:
        s = OipServer(gamma_model[1], max_rows=200, max_body_bytes=64_000,
                      limits=Limits(max_cells=1000, max_json_depth=10), log_path=str(log))
    finally:
        del os.environ["MLEOPS_READ_TIMEOUT_S"]
    with s:
        yield s


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def send(server, method="POST", path=INFER, body=b"", headers=JSON):
    return http_send(server.http_port, method, path, body, headers)


def x_input(values, **kw):
    return {"name": "x", "datatype": "FP64", "shape": [len(values)], "data": values, **kw}


def output(body):
    (out,) = body["outputs"]
    return out["name"], np.asarray(out["data"], float).reshape(out["shape"])


def metrics(server) -> dict[str, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mleops_"):
            assert 'registered_model="latency",registered_version="7"' in line, line
            out[line.split("{", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def assert_still_serving(server):
    status, body = infer(server.url, "latency", {"inputs": [x_input([1.5])]})
    assert status == 200 and np.isfinite(output(body)[1]).all(), body
    values = metrics(server)
    assert values and all(math.isfinite(v) for v in values.values()), values


# --- answers --------------------------------------------------------------------------------
def test_loglik_cdf_sf_quantiles_equal_the_engine(server, gamma_model):
    art, _ = gamma_model
    x = np.random.default_rng(1).gamma(2.0, 1.5, 100)
    status, body = infer(server.url, "latency", oip_request(x.tolist()))
    assert status == 200, body
    assert body["model_name"] == "latency" and body["model_version"] == "7"
    name, ll = output(body)
    assert name == "loglik"
    np.testing.assert_allclose(ll, art.loglik_rows(x), rtol=1e-9, atol=1e-12)
    for what, want in (("cdf", art.cdf(x)), ("sf", 1 - art.cdf(x))):
        status, body = infer(server.url, "latency", oip_request(x.tolist(), output=what))
        assert status == 200 and output(body)[0] == what
        np.testing.assert_allclose(output(body)[1], want, rtol=1e-9, atol=1e-12)
    status, body = infer(server.url, "latency", oip_request(
        x[:3].tolist(), output="quantiles", quantiles=[0.1, 0.9]), version="7")
    assert status == 200, body
    name, q = output(body)
    assert name == "quantiles" and q.shape == (3, 2)
    assert body["outputs"][0]["parameters"] == {"levels": "0.1,0.9"}
    np.testing.assert_allclose(q[0], art.ppf(np.array([0.1, 0.9])), rtol=1e-9)


def test_metadata_names_the_tensors(server):
    status, meta = send(server, "GET", "/v2/models/latency")
    assert status == 200 and meta["name"] == "latency"
    assert [i["name"] for i in meta["inputs"]] == ["x", "event"]
    assert [o["name"] for o in meta["outputs"]] == ["loglik", "cdf", "sf", "quantiles"]
    assert send(server, "GET", "/v2/models/latency/versions/7") == (status, meta)
    assert send(server, "GET", "/v2/models/latency/versions/7/ready")[0] == 200
    assert send(server, "GET", "/v2/health/live")[0] == 200
    assert send(server, "GET", "/v2/models")[1] == {"models": ["latency"]}


def test_metrics_count_rows_and_refusals(server):
    before = metrics(server)
    x = [1.0, 2.0, 3.0, 4.0]
    status, body = infer(server.url, "latency", oip_request(x))
    assert status == 200
    assert infer(server.url, "latency", oip_request([-1.0]))[0] == 400
    after = metrics(server)
    assert after["mleops_rows_total"] - before["mleops_rows_total"] == 4
    assert after["mleops_requests_total"] - before["mleops_requests_total"] == 1
    assert after["mleops_rejected_requests_total"] - before[
        "mleops_rejected_requests_total"] == 1
    assert after["mleops_rows_outside_support_total"] - before[
        "mleops_rows_outside_support_total"] == 1
    assert after["mleops_loglik_sum"] - before["mleops_loglik_sum"] == pytest.approx(
        sum(output(body)[1]), rel=1e-12)


def test_binds_loopback_only(server):
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    for port in (server.http_port, server.grpc_port):
        addrs = {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines()
                 if line.split()[3].endswith(f":{port}")}
        assert addrs and addrs <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, (port, addrs)


# --- the request contract -------------------------------------------------------------------
BAD = [  # (case, body, status, message)
    ("not json", b"{", 400, "not valid JSON"),
    ("deep json", b"[" * 50 + b"]" * 50, 400, "nested deeper than 10"),
    ("no inputs", {"inputz": []}, 400, "inputs"),
    ("empty inputs", {"inputs": []}, 400, "no inputs"),
    ("strings", {"inputs": [x_input([1.0, "a"])]}, 400, "must be numbers"),
    ("booleans", {"inputs": [x_input([True])]}, 400, "must be numbers"),
    ("nan", b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [NaN]}]}',
     400, "non-finite"),
    ("shape mismatch", {"inputs": [x_input([1.0, 2.0], shape=[3])]}, 400, "but 2 value(s)"),
    ("2 columns", {"inputs": [x_input([1.0, 2.0], shape=[1, 2])]}, 400, "[n] or [n, 1]"),
    ("ragged", {"inputs": [x_input([[1.0], [2.0, 3.0]], shape=[2, 1])]}, 400, "value(s)"),
    ("bytes", {"inputs": [x_input(["a"], datatype="BYTES")]}, 400, "numeric tensors only"),
    ("too many rows", {"inputs": [x_input([1.0] * 201)]}, 413, "the limit is 200"),
    ("unknown input", {"inputs": [x_input([1.0]), {**x_input([1.0]), "name": "age"}]}, 400,
     "unknown input(s) ['age']"),
    ("no x", {"inputs": [{**x_input([1.0]), "name": "event"}]}, 400, "lacks input(s) ['x']"),
    ("row counts", {"inputs": [x_input([1.0, 2.0]), {**x_input([1.0]), "name": "event"}]},
     400, "different row counts"),
    ("outside support", {"inputs": [x_input([-1.0])]}, 400, "outside the support"),
    ("subnormal", {"inputs": [x_input([5e-324])]}, 400, "subnormal"),
    ("output", {"inputs": [x_input([1.0])], "parameters": {"output": "pdf"}}, 400,
     "unknown output 'pdf'"),
    ("levels", {"inputs": [x_input([1.0])], "parameters": {"output": "quantiles",
                                                           "quantiles": "0.5,1.5"}}, 400,
     "strictly in (0, 1)"),
    ("level text", {"inputs": [x_input([1.0])], "parameters": {"quantiles": "a,b"}}, 400,
     "comma-separated"),
    ("cells", {"inputs": [x_input([1.0] * 100)], "parameters": {
        "output": "quantiles", "quantiles": ",".join(["0.5"] * 11)}}, 413, "the limit is 1000"),
    ("body size", {"inputs": [x_input([1.0] * 20_000)]}, 413, "exceeds the limit of 64000"),
]


@pytest.mark.parametrize("case,body,status,message", BAD, ids=[c[0] for c in BAD])
def test_bad_body_is_a_4xx_naming_the_problem(server, case, body, status, message):
    got, doc = send(server, body=body)
    assert (got, list(doc)) == (status, ["error"]), (case, doc)
    assert message in doc["error"], (case, doc)
    assert_still_serving(server)


ROUTES = [  # (case, method, path, headers, status, message)
    ("form post", "POST", INFER, {"Content-Type": "application/x-www-form-urlencoded"}, 415,
     "Content-Type"),
    ("no content type", "POST", INFER, {"Origin": "http://evil.example"}, 415,
     "Content-Type header missing"),  # none is JSON only without an Origin (a browser)
    ("get infer", "GET", INFER, JSON, 405, "takes POST"),
    ("post health", "POST", "/v2/health/ready", JSON, 405, "takes GET"),
    ("unknown model", "POST", "/v2/models/other/infer", JSON, 404, "no model 'other'"),
    ("unknown version", "POST", "/v2/models/latency/versions/8/infer", JSON, 404,
     "no version '8'"),
    ("repository load", "POST", "/v2/repository/models/latency/load", JSON, 404, "no route"),
    ("v1 routes", "POST", "/v1/models/latency:predict", JSON, 404, "no route"),
    ("docs", "GET", "/docs", JSON, 404, "no route"),
    ("rebinding", "POST", INFER, {**JSON, "Host": "evil.example:80"}, 403, "Host header"),
]


@pytest.mark.parametrize("case,method,path,headers,status,message", ROUTES,
                         ids=[c[0] for c in ROUTES])
def test_bad_method_route_or_header_is_refused(server, case, method, path, headers, status,
                                               message):
    got, doc = send(server, method, path, json.dumps({"inputs": [x_input([1.0])]}).encode(),
                    headers)
    assert (got, list(doc)) == (status, ["error"]), (case, doc)
    assert message in doc["error"], (case, doc)
    assert_still_serving(server)


def raw(server, data: bytes, *, wait_s: float = 0.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_chunked_short_and_slow_bodies_get_an_answer(server):
    body = json.dumps({"inputs": [x_input([1.0])]}).encode()
    head = f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    chunked = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + \
        f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    assert raw(server, chunked).startswith(b"HTTP/1.1 411"), raw(server, chunked)[:200]
    # the client sends half its body and stops: refused once the read timeout passes
    slow = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:10]
    assert raw(server, slow).startswith(b"HTTP/1.1 408")
    assert_still_serving(server)


# --- gRPC -------------------------------------------------------------------------------------
def grpc_request(values, model="latency", version="", **params):
    req = pb.ModelInferRequest(model_name=model, model_version=version, inputs=[
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP64", shape=[len(values)],
                                              contents=pb.InferTensorContents(
                                                  fp64_contents=values))])
    for k, v in params.items():
        req.parameters[k].string_param = v
    return req


def test_grpc_infer_equals_rest(server, stub, gamma_model):
    art, _ = gamma_model
    x = [0.5, 1.5, 4.0]
    r = stub.ModelInfer(grpc_request(x), timeout=10)
    assert r.model_name == "latency" and r.model_version == "7"
    assert r.outputs[0].name == "loglik" and list(r.outputs[0].shape) == [3]
    np.testing.assert_allclose(r.outputs[0].contents.fp64_contents, art.loglik_rows(
        np.array(x)), rtol=1e-9)
    r = stub.ModelInfer(grpc_request(x, output="quantiles", quantiles="0.5"), timeout=10)
    assert list(r.outputs[0].shape) == [3, 1]
    np.testing.assert_allclose(r.outputs[0].contents.fp64_contents,
                               art.ppf(np.full(3, 0.5)), rtol=1e-9)
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="latency"), timeout=10)
    assert [t.name for t in meta.inputs] == ["x", "event"]


@pytest.mark.parametrize("request_,code,message", [
    (grpc_request([-1.0]), grpc.StatusCode.INVALID_ARGUMENT, "outside the support"),
    (grpc_request([1.0], output="pdf"), grpc.StatusCode.INVALID_ARGUMENT, "unknown output"),
    (pb.ModelInferRequest(model_name="latency", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP64", shape=[4], contents=pb.InferTensorContents(
            fp64_contents=[1.0]))]), grpc.StatusCode.INVALID_ARGUMENT, "but 1 value(s)"),
    (grpc_request([1.0] * 201), grpc.StatusCode.INVALID_ARGUMENT, "the limit is 200"),
    (grpc_request([1.0], version="8"), grpc.StatusCode.NOT_FOUND, "no version '8'"),
    (grpc_request([1.0], model="other"), grpc.StatusCode.NOT_FOUND, "other"),
], ids=["support", "output", "shape", "rows", "version", "model"])
def test_grpc_refusals_name_the_problem(server, stub, request_, code, message):
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request_, timeout=10)
    assert e.value.code() == code and message in e.value.details(), e.value.details()
    assert_still_serving(server)


# --- covariates, the CLI, process hygiene ----------------------------------------------------
def test_covariates_are_inputs_named_after_their_features(tmp_path):
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(2000), rng.normal(size=2000)])
    y = rng.poisson(np.exp(0.3 + 0.5 * X[:, 1])).astype(float)
    art = ModelArtifact.from_fit(mleops.fit(y, "poisson_glm", X=X, features=["const", "age"]))
    stage_model(art, str(tmp_path), name="visits", version="1")
    with OipServer(str(tmp_path)) as s:
        status, body = infer(s.url, "visits", oip_request([[0.5, 2.0], [-1.0, 0.0]],
                                                          names=["age", "x"]))
        assert status == 200, body
        want = art.loglik_rows(np.array([2.0, 0.0]), X=np.array([[1, 0.5], [1, -1.0]]))
        np.testing.assert_allclose(output(body)[1], want, rtol=1e-9)
        status, body = infer(s.url, "visits", oip_request([1.0]))
        assert status == 400 and "lacks input(s) ['age']" in body["error"]


def test_mleops_serve_v2_and_predict_v2(gamma_model, tmp_path):
    art, model_dir = gamma_model
    port = free_port()
    proc = subprocess.Popen([MLEOPS, "serve", "--protocol", "v2", "--model-uri", model_dir,
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["url"] == f"http://127.0.0.1:{port}" and info["protocol"] == "v2"
        assert info["metrics"] == f"{info['url']}/metrics" and info["grpc"]
        out = subprocess.run([MLEOPS, "predict", "--protocol", "v2", "--url", info["url"],
                              "--data", "-", "--output", "cdf"], input="[1.0, 2.0]",
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        np.testing.assert_allclose(output(json.loads(out.stdout))[1],
                                   art.cdf(np.array([1.0, 2.0])), rtol=1e-9)
        bad = subprocess.run([MLEOPS, "predict", "--protocol", "v2", "--url", info["url"],
                              "--data", "-", "--version", "9"], input="[1.0]",
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "no version '9'" in bad.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    port_free("127.0.0.1", port)  # a new server can take the port (raises if not)


def test_a_port_answering_as_another_server_is_not_ready(server, gamma_model):
    """Readiness needs this server's id: a port taken by another server is not ready."""
    from mleops.serving import ServerError

    s = OipServer(gamma_model[1])
    s.http_port = server.http_port  # as if another server had won the port
    with pytest.raises(ServerError, match="answers as another server"):
        s.wait_ready(timeout=60)
    s.stop()
    assert send(server, "GET", "/v2/health/ready")[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    conn.request("GET", "/v2/health/ready")
    assert conn.getresponse().getheader(SERVER_ID_HEADER) == server.server_id
    conn.close()


def test_a_request_the_server_fails_is_a_5xx_and_counted_as_its_own_failure(gamma_model,
                                                                            tmp_path):
    """The server's own fault (an armed failpoint inside evaluate), not the client's: REST
    answers 500 and gRPC INTERNAL, each counted in ``mleops_failed_requests_total`` (a KServe
    canary's error rate: its request histogram has no status) and not as answered or
    refused; the server stays up."""
    from mleops import failpoints

    os.environ[failpoints.ENV] = "serving.evaluate"
    try:
        s = OipServer(gamma_model[1], log_path=str(tmp_path / "oip.log"))
    finally:
        del os.environ[failpoints.ENV]
    with s:
        before = metrics(s)
        assert infer(s.url, "latency", oip_request([1.0, 2.0]))[0] == 500
        with grpc.insecure_channel(s.grpc_target) as channel:
            with pytest.raises(grpc.RpcError) as e:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request([1.0]),
                                                                    timeout=10)
        assert e.value.code() == grpc.StatusCode.INTERNAL
        after = metrics(s)
        assert after["mleops_failed_requests_total"] - before[
            "mleops_failed_requests_total"] == 2
        for name in ("mleops_requests_total", "mleops_rejected_requests_total",
                     "mleops_rows_total"):
            assert after[name] == before[name], name
        assert send(s, "GET", "/v2/health/ready")[0] == 200
