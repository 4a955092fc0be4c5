"""The request contract against the real seldon-core server: 60+ kinds of bad input.

Each case: the exact status, a message naming the problem, the server still serving, and
every exported mleops metric finite afterwards (a refused request moves only the refusal
counters).
"""

import json
import math
import socket
import urllib.request

import numpy as np
import pytest
from support.http import send as http_send

import mleops
from mleops.artifact import ModelArtifact
from mleops.serving.client import predict
from mleops.serving.contract import Limits
from mleops.serving.process import LocalServer
from mleops.serving.service import stage_model

pytestmark = pytest.mark.slow
PATH = "/api/v1.0/predictions"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    x = np.random.default_rng(0).gamma(2.0, 1.5, 2000)
    d = tmp_path_factory.mktemp("gamma")
    stage_model(ModelArtifact.from_fit(mleops.fit(x, "gamma")), str(d), name="latency",
                version="7")
    limits = Limits(max_cells=1000, max_json_depth=10)
    with LocalServer(str(d), max_rows=200, max_body_bytes=64_000, metrics_interval=0.0,
                     limits=limits,
                     log_path=str(tmp_path_factory.mktemp("log") / "s.log")) as s:
        yield s


def send(server, method="POST", path=PATH, body=b"", headers=JSON):
    return http_send(server.http_port, method, path, body, headers)


def msg(doc):
    return (doc.get("status") or {}).get("info", "") if isinstance(doc, dict) else ""


def nd(rows, **tags):
    out = {"data": {"ndarray": rows}}
    return {**out, "meta": {"tags": tags}} if tags else out


def deep(n):
    return ("[" * n + "]" * n).encode()


CASES = {
    # JSON itself
    "not-json": (b"{not json", 400, "not valid JSON"),
    "empty-body": (b"", 400, "not valid JSON"),
    "not-utf8": (b'{"data": "\xff\xfe"}', 400, "not valid JSON"),
    "top-level-array": ([1, 2], 400, "must be a JSON object"),
    "top-level-string": ("abc", 400, "must be a JSON object"),
    "top-level-null": (None, 400, "must be a JSON object"),
    "deep-10k": (deep(10_000), 400, "nested deeper than 10"),
    "deep-in-meta": ({"data": {"ndarray": [[1.0]]}, "meta": json.loads(
        '{"a":' * 12 + "1" + "}" * 12)}, 400, "nested deeper than 10"),
    # the message's shape
    "no-data": ({}, 400, "no 'data'"),
    "data-is-a-list": ({"data": [1, 2]}, 400, "'data' must be a JSON object"),
    "data-empty": ({"data": {}}, 400, "exactly one of"),
    "ndarray-and-tensor": ({"data": {"ndarray": [[1.0]], "tensor": {"shape": [1],
                                                                   "values": [1.0]}}},
                           400, "exactly one of"),
    "tftensor": ({"data": {"tftensor": {}}}, 400, "exactly one of"),
    "strData": ({"strData": "1.0"}, 400, "unsupported field(s) ['strData']"),
    "jsonData": ({"jsonData": {"x": 1}}, 400, "unsupported field(s) ['jsonData']"),
    "binData": ({"binData": "AAAA"}, 400, "unsupported field(s) ['binData']"),
    "meta-string": ({**nd([[1.0]]), "meta": "x"}, 400, "'meta' must be a JSON object"),
    "tags-list": ({**nd([[1.0]]), "meta": {"tags": [1]}}, 400,
                  "'meta.tags' must be a JSON object"),
    # ndarray
    "ndarray-empty": (nd([]), 400, "no rows"),
    "ndarray-not-list": ({"data": {"ndarray": "1.0"}}, 400, "must be a list of rows"),
    "ndarray-strings": (nd([["a"], ["b"]]), 400, "str 'a'; values must be numbers"),
    "ndarray-3d": (nd([[[1.0]]]), 400, "values must be numbers"),
    "ragged": (nd([[1.0], [1.0, 2.0]]), 400, "not rectangular: row 1"),
    "rows-and-scalars": (nd([[1.0], 2.0]), 400, "not rectangular"),
    "empty-rows": (nd([[]]), 400, "rows are empty"),
    "boolean": (nd([[True]]), 400, "boolean True"),
    "null-value": (nd([[None]]), 400, "NoneType None"),
    "nan-literal": (b'{"data": {"ndarray": [[NaN], [1.0]]}}', 400, "non-finite"),
    "infinity-literal": (b'{"data": {"ndarray": [[Infinity]]}}', 400, "non-finite"),
    "overflow-1e400": (b'{"data": {"ndarray": [[1e400]]}}', 400, "non-finite"),
    "huge-integer": (b'{"data": {"ndarray": [[' + b"9" * 400 + b"]]}}", 400, "too large"),
    "subnormal": (nd([[5e-324]]), 400, "subnormal"),
    "subnormal-negative": (nd([[1.0], [-1e-310]]), 400, "subnormal"),
    "outside-support": (nd([[1.0], [-1.0]]), 400, "outside the support of gamma"),
    "zero-for-gamma": (nd([[0.0]]), 400, "outside the support of gamma"),
    "too-many-columns-for-model": (nd([[1.0, 2.0]]), 400, "expected 1"),
    "too-many-rows": (nd([[1.0]] * 201), 413, "the limit is 200"),
    "too-many-columns": (nd([[1.0] * 65]), 413, "65 columns; the limit is 64"),
    "oversize-body": (b'{"data": {"ndarray": [' + b"[1.0]," * 12_000 + b"[1.0]]}}", 413,
                      "exceeds the limit of 64000"),
    # tensor
    "tensor-shape-mismatch": ({"data": {"tensor": {"shape": [2, 1], "values": [1.0]}}}, 400,
                              "needs 2 values, got 1"),
    "tensor-shape-1e9": ({"data": {"tensor": {"shape": [1_000_000_000, 1],
                                              "values": [1.0]}}}, 413, "the limit is 200"),
    "tensor-shape-negative": ({"data": {"tensor": {"shape": [-1, 1], "values": [1.0]}}}, 400,
                              "positive integers"),
    "tensor-shape-3d": ({"data": {"tensor": {"shape": [1, 1, 1], "values": [1.0]}}}, 400,
                        "1 or 2 positive integers"),
    "tensor-shape-strings": ({"data": {"tensor": {"shape": ["1"], "values": [1.0]}}}, 400,
                             "positive integers"),
    "tensor-shape-bool": ({"data": {"tensor": {"shape": [True], "values": [1.0]}}}, 400,
                          "positive integers"),
    "tensor-values-not-list": ({"data": {"tensor": {"shape": [1], "values": 1.0}}}, 400,
                               "values must be a list"),
    "tensor-no-values": ({"data": {"tensor": {"shape": [1]}}}, 400, "values must be a list"),
    "tensor-string-values": ({"data": {"tensor": {"shape": [1], "values": ["1"]}}}, 400,
                             "values must be numbers"),
    "tensor-not-object": ({"data": {"tensor": [1.0]}}, 400, "data.tensor must be a JSON"),
    # names
    "names-count": ({"data": {"names": ["x", "y"], "ndarray": [[1.0]]}}, 400,
                    "2 names for 1 columns"),
    "names-duplicate": ({"data": {"names": ["x", "x"], "ndarray": [[1.0, 2.0]]}}, 400,
                        "repeats ['x']"),
    "names-not-strings": ({"data": {"names": [1], "ndarray": [[1.0]]}}, 400,
                          "list of column names"),
    "names-lack-x": ({"data": {"names": ["y"], "ndarray": [[1.0]]}}, 400,
                     "lacks column(s) ['x']"),
    # options
    "output-unknown": (nd([[1.0]], output="mean"), 400, "unknown output 'mean'"),
    "output-number": (nd([[1.0]], output=3), 400, "unknown output 3"),
    "quantiles-string": (nd([[1.0]], output="quantiles", quantiles="abc"), 400,
                         "non-empty list of numbers"),
    "quantiles-empty": (nd([[1.0]], output="quantiles", quantiles=[]), 400,
                        "non-empty list of numbers"),
    "quantiles-zero": (nd([[1.0]], output="quantiles", quantiles=[0, 0.5]), 400,
                       "strictly in (0, 1)"),
    "quantiles-above-one": (nd([[1.0]], output="quantiles", quantiles=[1.5]), 400,
                            "strictly in (0, 1)"),
    "quantiles-bool": (nd([[1.0]], output="quantiles", quantiles=[True]), 400,
                       "list of numbers"),
    "quantiles-too-many": (nd([[1.0]], output="quantiles",
                              quantiles=[0.5] * 65), 413, "65 quantile levels; the limit is 64"),
    "quantiles-cells": (nd([[1.0]] * 200, output="quantiles", quantiles=[0.1] * 6), 413,
                        "1200 values; the limit is 1000"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_body_is_a_4xx_naming_the_problem(server, case):
    body, status, message = CASES[case]
    got, doc = send(server, body=body)
    assert got == status, (case, doc)
    assert message in msg(doc), (case, doc)
    assert_still_serving(server)


HEADER_CASES = {
    "text-plain": ("POST", PATH, {"Content-Type": "text/plain"}, 415,
                   "Content-Type header must be application/json, got 'text/plain'"),
    "form-post": ("POST", PATH, {"Content-Type": "application/x-www-form-urlencoded"}, 415,
                  "Content-Type header must be application/json"),
    "no-content-type": ("POST", PATH, {}, 415, "Content-Type header missing"),
    "get-predict": ("GET", "/predict", JSON, 405, "takes POST"),
    "get-predict-json-arg": ("GET", "/predict?json=%7B%7D", JSON, 405, "takes POST"),
    "put-predict": ("PUT", PATH, JSON, 405, "takes POST"),
    "feedback": ("POST", "/api/v1.0/feedback", JSON, 404, "no route /api/v1.0/feedback"),
    "route": ("POST", "/route", JSON, 404, "no route /route"),
    "aggregate": ("POST", "/aggregate", JSON, 404, "no route"),
    "foreign-host": ("POST", PATH, {**JSON, "Host": "evil.example"}, 403,
                     "Host header 'evil.example' refused"),
    "foreign-host-get": ("GET", "/health/status", {"Host": "evil.example"}, 403,
                         "Host header"),
    "post-health": ("POST", "/health/status", JSON, 405, "takes GET"),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_bad_method_route_or_header_is_refused(server, case):
    method, path, headers, status, message = HEADER_CASES[case]
    form = b"json=" + json.dumps(nd([[5e-324]])).encode()
    got, doc = send(server, method, path, body=form if method != "GET" else b"",
                    headers=headers)
    assert got == status, (case, doc)
    assert message in msg(doc), (case, doc)
    assert_still_serving(server)


def raw(server, data: bytes, *, half_close: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and not half_close:
                break
        return b"".join(chunks)


def test_a_body_shorter_than_its_content_length_is_400(server):
    body = json.dumps(nd([[1.0]])).encode()
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) + 10}\r\n\r\n").encode()
    answer = raw(server, head + body, half_close=True)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert_still_serving(server)


@pytest.mark.parametrize("value", ["\u00b2", "-1", "1e3", "abc"])
def test_a_malformed_content_length_gets_an_answer(server, value):
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {value}\r\n\r\n{{}}").encode()
    answer = raw(server, head, half_close=True)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert_still_serving(server)


def test_responses_carry_no_cumulative_totals(server):
    status, body = predict(server.url, nd([[1.0], [2.0]]))
    assert status == 200
    assert "metrics" not in body.get("meta", {}), body["meta"]
    assert "loglik_sum" not in json.dumps(body)


def metrics(server) -> dict[str, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mleops_"):
            name = line.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def assert_still_serving(server):
    status, body = predict(server.url, nd([[1.5]]))
    assert status == 200 and np.isfinite(body["data"]["ndarray"][0][0])
    values = metrics(server)
    assert values and all(math.isfinite(v) for v in values.values()), values


def test_a_request_the_server_fails_is_a_500_and_counted_as_its_own_failure(gamma_model,
                                                                            tmp_path):
    """Seldon's v1 server as the OIP one (tests/serving/test_oip_server.py): its own fault
    is a 500 and ``mleops_failed_requests_total``, flushed with the request, not counted as
    answered or refused; the server stays up."""
    import os

    from mleops import failpoints

    os.environ[failpoints.ENV] = "serving.evaluate"
    try:
        s = LocalServer(gamma_model[1], metrics_interval=0.0, log_path=str(tmp_path / "s.log"))
    finally:
        del os.environ[failpoints.ENV]
    with s:
        before = metrics(s)
        assert predict(s.url, nd([[1.0], [2.0]]))[0] == 500
        after = metrics(s)
        assert after["mleops_failed_requests_total"] - before.get(
            "mleops_failed_requests_total", 0.0) == 1
        for name in ("mleops_requests_total", "mleops_rejected_requests_total",
                     "mleops_rows_total"):
            assert after[name] == before.get(name, 0.0), name
        assert send(s, "GET", "/health/ping")[0] == 200
