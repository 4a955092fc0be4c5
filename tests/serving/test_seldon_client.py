"""The v1 (Seldon) server driven by seldon-core's own SeldonClient, not our client: run in
the serving environment (seldon-core pins numpy<2, protobuf<4) as a subprocess, over gRPC
and REST. Answers must equal the engine's, refusals must be 4xx / INVALID_ARGUMENT naming
the problem (never gRPC UNKNOWN, which Seldon answered before), the server still serving.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mleops.serving.client import predict
from mleops.serving.process import LocalServer, serving_python

pytestmark = pytest.mark.slow
PROBE = Path(__file__).parents[1] / "support" / "seldon" / "seldon_client_probe.py"
X = [1.0, 2.0, 4.0]  # the probe's rows


@pytest.fixture(scope="module")
def server(gamma_model, tmp_path_factory) -> Iterator[LocalServer]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with LocalServer(gamma_model[1], max_rows=200, max_body_bytes=64_000,
                     metrics_interval=0.0, log_path=str(log)) as s:
        yield s


@pytest.fixture(scope="module")
def answers(server) -> dict:
    run = subprocess.run([serving_python(), str(PROBE), f"127.0.0.1:{server.http_port}",
                          f"127.0.0.1:{server.grpc_port}"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def values(data: dict) -> np.ndarray:
    return np.ravel(data["tensor"]["values"] if "tensor" in data else data["ndarray"])


@pytest.mark.parametrize("payload", ["ndarray", "tensor"])
def test_grpc_answers_equal_the_engine(answers, gamma_model, payload):
    got = answers[f"grpc-{payload}"]
    assert got["success"], got
    body = got["response"]
    assert body["meta"]["tags"]["model_name"] == "latency"
    assert body["meta"]["tags"]["model_version"] == "7"
    assert body["data"]["names"] == ["loglik"] and payload in body["data"]
    np.testing.assert_allclose(values(body["data"]), gamma_model[0].loglik_rows(np.array(X)),
                               rtol=1e-9)


@pytest.mark.parametrize("case,message", [
    ("outside-support", "outside the support of gamma"),
    ("two-columns", "payload has 2 column(s); expected 1"),
    ("json-data", "payload must be numeric"),
])
def test_grpc_refusals_are_invalid_argument_naming_the_problem(answers, case, message):
    got = answers[f"grpc-{case}"]
    assert not got["success"] and "StatusCode.INVALID_ARGUMENT" in got["msg"], got
    assert message in got["msg"], got


@pytest.mark.parametrize("payload", ["ndarray", "tensor"])
def test_rest_form_posts_are_refused_as_a_4xx(answers, payload):
    """SeldonClient's REST microservice call is a form post (``json=`` field): the request
    contract refuses it (what a cross-site form sends) with 415 naming the Content-Type."""
    got = answers[f"rest-{payload}"]
    status = got["response"]["status"]
    assert not got["success"] and status["code"] == 415, got
    assert "Content-Type header must be application/json" in status["info"], got


def test_still_serving_after_the_client(answers, server, gamma_model):
    status, body = predict(server.url, {"data": {"ndarray": [[x] for x in X]}})
    assert status == 200, body
    np.testing.assert_allclose(np.ravel(body["data"]["ndarray"]),
                               gamma_model[0].loglik_rows(np.array(X)), rtol=1e-9)
