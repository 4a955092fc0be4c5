"""The real seldon-core microservice (its own environment) serving mleops models on 127.0.0.1."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import mleops
from mleops.artifact import ModelArtifact
from mleops.serving.client import predict
from mleops.serving.process import LocalServer
from mleops.serving.service import stage_model

pytestmark = pytest.mark.slow
MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")


@pytest.fixture(scope="module")
def server(gamma_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with LocalServer(gamma_model[1], max_rows=200, max_body_bytes=64_000,
                     metrics_interval=0.0, log_path=str(log)) as s:
        yield s


def rows(body):
    return np.asarray(body["data"]["ndarray"], dtype=float)


def metric(server, name):
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    vals = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name + "{") and 'registered_version="7"' in line]
    return sum(vals)


def test_loglik_equals_the_engine_and_meta_names_the_version(server, gamma_model):
    art, _ = gamma_model
    x = np.random.default_rng(1).gamma(2.0, 1.5, 100)
    status, body = predict(server.url, {"data": {"ndarray": x[:, None].tolist()}})
    assert status == 200, body
    np.testing.assert_allclose(rows(body)[:, 0], art.loglik_rows(x), rtol=1e-9, atol=1e-12)
    assert body["meta"]["tags"]["model_name"] == "latency"
    assert body["meta"]["tags"]["model_version"] == "7"
    assert body["data"]["names"] == ["loglik"]


def test_tensor_payload_cdf_sf_and_quantiles(server, gamma_model):
    art, _ = gamma_model
    x = [0.5, 2.0, 9.0]
    tensor = {"data": {"tensor": {"shape": [3, 1], "values": x}}}
    status, body = predict(server.url, {**tensor, "meta": {"tags": {"output": "cdf"}}})
    assert status == 200, body
    cdf = art.cdf(np.array(x))
    np.testing.assert_allclose(np.ravel(body["data"]["tensor"]["values"]), cdf, rtol=1e-9)
    status, body = predict(server.url, {"data": {"ndarray": [[9.0]]},
                                        "meta": {"tags": {"output": "sf"}}})
    np.testing.assert_allclose(rows(body)[0, 0], 1 - cdf[2], rtol=1e-9)
    status, body = predict(server.url, {"data": {"ndarray": [[1.0]]},
                                        "meta": {"tags": {"output": "quantiles",
                                                          "quantiles": [0.1, 0.9]}}})
    assert status == 200 and body["data"]["names"] == ["q0.1", "q0.9"]
    np.testing.assert_allclose(rows(body)[0], art.ppf(np.array([0.1, 0.9])), rtol=1e-7)


def test_metrics_move_with_requests(server):
    before_rows = metric(server, "mleops_rows_total")
    before_req = metric(server, "mleops_requests_total")
    before_sum = metric(server, "mleops_loglik_sum")
    before_sq = metric(server, "mleops_loglik_sq_sum")
    x = [[1.0], [2.0], [3.0], [4.0]]
    status, body = predict(server.url, {"data": {"ndarray": x}})
    assert status == 200
    assert metric(server, "mleops_rows_total") == before_rows + 4
    assert metric(server, "mleops_requests_total") == before_req + 1
    np.testing.assert_allclose(metric(server, "mleops_loglik_sum") - before_sum,
                               rows(body).sum(), rtol=1e-9)
    np.testing.assert_allclose(metric(server, "mleops_loglik_sq_sum") - before_sq,
                               np.square(rows(body)).sum(), rtol=1e-9)


def test_gauges_have_one_series_whatever_path_flushes(server):
    """Seldon labels each flush with the calling method: a cumulative gauge flushed from the
    health path as well would exist twice and every sum() over it would double."""
    assert predict(server.url, {"data": {"ndarray": [[1.0], [2.0]]}})[0] == 200
    for _ in range(3):
        time.sleep(0.3)  # past the flush interval, so the health path may flush
        urllib.request.urlopen(f"{server.url}/health/status", timeout=5).read()
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    for name in ("mleops_loglik_sum", "mleops_loglik_sq_sum"):
        series = [line for line in text.splitlines()
                  if line.startswith(name + "{") and 'registered_version="7"' in line]
        assert len(series) == 1 and 'method="predict"' in series[0], series


def test_models_uri_is_staged_like_the_storage_initializer(tmp_path, gamma_model):
    from mleops.registry.registry import Registry
    from mleops.serving.model_dir import resolve_model_dir

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    reg = Registry(uri, retries=1)
    run = reg.log_training_run(experiment="srv", params={}, metrics={},
                               artifact=gamma_model[0])
    reg.register("srv", run, tags={})
    d = resolve_model_dir("models:/srv@champion", tracking_uri=uri,
                          stage_root=str(tmp_path / "stage"))
    assert d == str(tmp_path / "stage" / "srv" / "1")
    assert json.load(open(os.path.join(d, "serving.json"))) == {"name": "srv", "version": "1"}
    assert resolve_model_dir("models:/srv/1", tracking_uri=uri,
                             stage_root=str(tmp_path / "s2")).endswith("/srv/1")
    with pytest.raises(mleops.DataError, match="no such registered model version"):
        resolve_model_dir("models:/srv/9", tracking_uri=uri, stage_root=str(tmp_path / "s3"))


def test_outside_support_rows_are_counted(server):
    before = metric(server, "mleops_rows_outside_support_total")
    assert predict(server.url, {"data": {"ndarray": [[-1.0], [-2.0], [3.0]]}})[0] == 400
    assert predict(server.url, {"data": {"ndarray": [[1.5]]}})[0] == 200  # flushes the count
    assert metric(server, "mleops_rows_outside_support_total") == before + 2


def _listening():
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                addr, port = local.split(":")
                out.add((addr, int(port, 16)))
    return out


def test_binds_loopback_only(server):
    import time

    wildcard = {"00000000", "00000000000000000000000000000000"}
    deadline = time.time() + 20
    while time.time() < deadline and not any(p == server.grpc_port for _, p in _listening()):
        time.sleep(0.2)  # the gRPC server starts in its own process, a little later
    listening = _listening()
    for port in (server.http_port, server.metrics_port, server.grpc_port):
        addrs = {a for a, p in listening if p == port}
        assert addrs and not addrs & wildcard, (port, addrs)


def test_regression_model_with_named_columns(tmp_path):
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(2000), rng.normal(size=2000)])
    y = rng.poisson(np.exp(0.3 + 0.5 * X[:, 1])).astype(float)
    art = ModelArtifact.from_fit(mleops.fit(y, "poisson_glm", X=X, features=["const", "age"]))
    stage_model(art, str(tmp_path), name="visits", version="1")
    with LocalServer(str(tmp_path)) as s:
        payload = {"data": {"names": ["age", "x"], "ndarray": [[0.5, 2.0], [-1.0, 0.0]]}}
        status, body = predict(s.url, payload)
        assert status == 200, body
        want = art.loglik_rows(np.array([2.0, 0.0]), X=np.array([[1, 0.5], [1, -1.0]]))
        np.testing.assert_allclose(rows(body)[:, 0], want, rtol=1e-9)
        status, body = predict(s.url, {"data": {"names": ["x"], "ndarray": [[1.0]]}})
        assert status == 400 and "lacks column(s) ['age']" in body["status"]["info"]
        out = subprocess.run([MLEOPS, "predict", "--protocol", "v1", "--url", s.url, "--data", "-"],
                             input=json.dumps(payload), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        np.testing.assert_allclose(rows(json.loads(out.stdout))[:, 0], want, rtol=1e-9)


def test_mleops_serve_runs_until_sigterm_and_cleans_up(gamma_model, tmp_path):
    import signal
    import socket

    from mleops.serving.process import free_port

    port = free_port()
    proc = subprocess.Popen([MLEOPS, "serve", "--protocol", "v1", "--model-uri", gamma_model[1], "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["url"] == f"http://127.0.0.1:{port}"
        status, body = predict(info["url"], {"data": {"ndarray": [[1.0]]}})
        assert status == 200 and body["meta"]["tags"]["model_version"] == "7"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing left listening


def test_server_fetches_a_models_uri_itself(mlflow_server, gamma_model):  # noqa: F811
    """The server environment (mlflow-skinny, no sqlite store) resolves models:/ at load."""
    from mleops.registry.registry import Registry

    reg = Registry(mlflow_server, retries=2)
    run = reg.log_training_run(experiment="served", params={}, metrics={},
                               artifact=gamma_model[0])
    version = reg.register("served", run, tags={})
    with LocalServer("models:/served@champion", tracking_uri=mlflow_server) as s:
        status, body = predict(s.url, {"data": {"ndarray": [[1.0], [2.0]]}})
        assert status == 200, body
        assert body["meta"]["tags"]["model_version"] == version
        np.testing.assert_allclose(rows(body)[:, 0], gamma_model[0].loglik_rows([1.0, 2.0]),
                                   rtol=1e-9)


def test_not_ready_until_loaded(gamma_model):
    """Before load() the health check answers 503 (so a readiness probe holds traffic back)."""
    from mleops.serving.process import serving_python

    code = ("from mleops.serving.seldon import MleopsModel\n"
            f"m = MleopsModel({gamma_model[1]!r})\n"
            "try:\n    m.health_status()\nexcept Exception as e:\n"
            "    print('before', e.status_code)\n"
            "m.load()\nprint('after', m.health_status()['ready'])\n")
    out = subprocess.run([serving_python(), "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "before 503" in out.stdout and "after True" in out.stdout


def test_rejections_are_exported_by_health_probes_alone(server):
    """A server that rejects everything still reports it: the probe flushes the counters."""
    before = metric(server, "mleops_rows_outside_support_total")
    assert predict(server.url, {"data": {"ndarray": [[-1.0], [-2.0], [-3.0]]}})[0] == 400
    urllib.request.urlopen(f"{server.url}/health/status", timeout=5).read()
    assert metric(server, "mleops_rows_outside_support_total") == before + 3
