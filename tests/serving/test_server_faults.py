"""The model server under concurrency and faults: exact counters, no orphans, honest ports."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mleops
from mleops.artifact import ModelArtifact
from mleops.serving.client import infer, oip_request, predict
from mleops.serving.process import LocalServer, ServerError, free_port
from mleops.serving.service import stage_model

pytestmark = pytest.mark.slow
MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    x = np.random.default_rng(0).lognormal(0.0, 0.5, 2000)
    d = tmp_path_factory.mktemp("lognormal")
    stage_model(ModelArtifact.from_fit(mleops.fit(x, "lognormal")), str(d), name="lat",
                version="3")
    return str(d)


def series(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{"))


def test_counters_are_exact_at_8_client_threads_and_4_server_threads(model_dir):
    """seldon-core's metrics store loses increments under threads (16-21k of 40k rows were
    counted before); with the store locked and the model as the one writer it is exact."""
    rng = np.random.default_rng(1)
    batches = [rng.lognormal(0.0, 0.5, 40) for _ in range(1000)]  # 40k rows
    with LocalServer(model_dir, threads=4, metrics_interval=0.05) as s:
        def send(x):
            status, body = predict(s.url, {"data": {"ndarray": x[:, None].tolist()}})
            assert status == 200, body
            return float(np.sum(body["data"]["ndarray"]))

        with ThreadPoolExecutor(8) as pool:
            sums = list(pool.map(send, batches))
        want_rows, want_sum = 40_000, sum(sums)
        deadline = time.time() + 20
        while time.time() < deadline and series(s.metrics_url, "mleops_rows_total") < want_rows:
            time.sleep(0.2)  # the flusher writes within metrics_interval of the last request
        assert series(s.metrics_url, "mleops_rows_total") == want_rows
        assert series(s.metrics_url, "mleops_requests_total") == 1000
        np.testing.assert_allclose(series(s.metrics_url, "mleops_loglik_sum"), want_sum,
                                   rtol=1e-9)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _wait_gone(pgid: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not _group_alive(pgid):
            return True
        time.sleep(0.2)
    return False


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_killed_server_leaves_no_processes_or_ports(model_dir):
    s = LocalServer(model_dir)
    try:
        s.wait_ready()
        pgid = os.getpgid(s.proc.pid)
        deadline = time.time() + 20
        while time.time() < deadline and _port_free(s.grpc_port):
            time.sleep(0.2)
        os.kill(s.proc.pid, signal.SIGKILL)  # only the main process: nothing runs cleanup
        s.proc.wait(10)  # reaped, so only the processes it started can keep the group
        assert _wait_gone(pgid), "server processes outlived the killed main process"
        assert all(_port_free(p) for p in (s.http_port, s.metrics_port, s.grpc_port))
    finally:
        s.stop()


OWNER = """
import sys, time
from mleops.serving import process
s = getattr(process, sys.argv[2])(sys.argv[1])
s.wait_ready()
print(s.proc.pid, s.http_port, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("server", ["LocalServer", "OipServer"])
def test_servers_die_with_their_owner_killed_by_sigkill(model_dir, server):
    """The router, the data plane or `mleops serve` killed with SIGKILL runs no cleanup: its
    model servers (v1 and v2) notice their owner is gone and stop their whole process group."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, model_dir, server],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pid, port = map(int, owner.stdout.readline().split())
        pgid = os.getpgid(pid)
        url = f"http://127.0.0.1:{port}"
        answer = (predict(url, {"data": {"ndarray": [[1.0]]}}) if server == "LocalServer"
                  else infer(url, "lat", oip_request([1.0])))
        assert answer[0] == 200, answer
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        assert _wait_gone(pgid), "model server orphaned by its killed owner"
        assert _port_free(port)
    finally:
        if owner.poll() is None:
            owner.kill()


def test_serve_refuses_a_taken_port(model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            LocalServer(model_dir, http_port=port)
        out = subprocess.run([MLEOPS, "serve", "--protocol", "v1", "--model-uri", model_dir, "--port", str(port)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, out
        assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
        assert out.stdout == ""  # never reported ready


def test_a_port_answering_as_another_server_is_not_ready(model_dir):
    """A port taken between our start and its first answer: the health check must prove the
    answer comes from our process (its server id), not just any 200."""
    with LocalServer(model_dir) as first:
        other = LocalServer(model_dir, http_port=free_port())
        try:
            other.http_port = first.http_port  # as if its port were taken by the first
            with pytest.raises(ServerError, match="answers as another server"):
                other.wait_ready(timeout=60)
        finally:
            other.stop()
        assert json.loads(urllib.request.urlopen(f"{first.url}/health/status",
                                                 timeout=5).read())["jsonData"]["ready"]


def test_the_server_environment_runs_the_last_apache_seldon_core():
    """seldon-core 1.18+ is under the Business Source License 1.1; 1.17.1 is Apache-2.0."""
    from mleops.serving.process import serving_python

    req = open(os.path.join(os.path.dirname(__file__), "..", "..", "serving",
                            "requirements.txt")).read()
    assert "seldon-core==1.17.1" in req.splitlines()
    code = ("import importlib.metadata as m; d = m.distribution('seldon-core'); "
            "print(d.version, d.metadata.get('License'))")
    out = subprocess.run([serving_python(), "-c", code], capture_output=True, text=True,
                         timeout=60)
    version, licence = out.stdout.split(" ", 1)
    assert version == "1.17.1" and "Apache" in licence, out.stdout


def test_slow_clients_do_not_starve_the_server(model_dir, monkeypatch):
    """Six connections that send their headers and never their body once held all four
    threads; with a read timeout each is answered 408 and the server keeps answering."""
    monkeypatch.setenv("MLEOPS_READ_TIMEOUT_S", "1")
    head = (b"POST /api/v1.0/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    with LocalServer(model_dir, threads=4) as s:
        slow = [socket.create_connection(("127.0.0.1", s.http_port), timeout=30)
                for _ in range(6)]
        try:
            for c in slow:
                c.sendall(head)
            time.sleep(0.5)
            status, body = predict(s.url, {"data": {"ndarray": [[1.0]]}}, timeout=30)
            assert status == 200, body
            for c in slow:
                assert c.recv(65536).startswith(b"HTTP/1.1 408")
        finally:
            for c in slow:
                c.close()


def test_counters_are_exact_with_two_worker_processes(model_dir):
    rng = np.random.default_rng(2)
    batches = [rng.lognormal(0.0, 0.5, 25) for _ in range(400)]
    with LocalServer(model_dir, threads=4, workers=2, metrics_interval=0.05) as s:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda x: predict(
                s.url, {"data": {"ndarray": x[:, None].tolist()}})[0], batches))
        assert statuses == [200] * 400
        deadline = time.time() + 20
        while time.time() < deadline and series(s.metrics_url, "mleops_rows_total") < 10_000:
            time.sleep(0.2)
        assert series(s.metrics_url, "mleops_rows_total") == 10_000
        assert series(s.metrics_url, "mleops_requests_total") == 400
