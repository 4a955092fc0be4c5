"""Against the real Prometheus server (Debian's ``prometheus``), scraping real seldon-core
model servers with ``infra/prometheus/rules.yaml`` loaded: what Prometheus records equals what
the servers computed for the rows sent, restarts included; a rollout on the local router
decided from Prometheus reaches the router's own decision; Prometheus down holds it."""

import contextlib
import json
import threading
import uuid

import numpy as np
import pytest
from support.prometheus import binary, prometheus_server
from test_rollout_local import _client, _plane, live_data, registry, runs  # noqa: F401

import mleops
from mleops.artifact import ModelArtifact
from mleops.rollout.backends.prometheus import PrometheusEvidence
from mleops.serving.client import predict
from mleops.serving.process import LocalServer
from mleops.serving.service import stage_model

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(binary() is None, reason="needs Debian's prometheus")]


@pytest.fixture(scope="module")
def artifact():
    x = np.random.default_rng(0).lognormal(0.0, 0.5, 2000)
    return ModelArtifact.from_fit(mleops.fit(x, "lognormal"))


@pytest.fixture
def name():
    """A model name of the test's own: the worker's Prometheus keeps earlier tests' series."""
    return f"lat-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def model_dir(artifact, name, tmp_path):
    stage_model(artifact, str(tmp_path / "model"), name=name, version="3")
    return str(tmp_path / "model")


def sel(name: str) -> str:
    return f'registered_model="{name}",registered_version="3"'


def send(server, batches) -> tuple[int, float, float]:
    """Rows, sum and sum of squares of the log-likelihoods the server answered."""
    n, s, ss = 0, 0.0, 0.0
    for x in batches:
        status, body = predict(server.url, {"data": {"ndarray": x[:, None].tolist()}})
        assert status == 200, body
        ll = np.asarray(body["data"]["ndarray"], float).ravel()
        n, s, ss = n + ll.size, s + float(ll.sum()), ss + float((ll ** 2).sum())
    return n, s, ss


def outside(server, k: int) -> None:
    for _ in range(k):  # a negative latency: outside the lognormal's support, refused
        status, _ = predict(server.url, {"data": {"ndarray": [[-1.0]]}})
        assert status == 400


def test_recorded_series_equal_what_the_servers_computed_across_a_restart(
        model_dir, name, prometheus):
    rng = np.random.default_rng(4)
    first = [rng.lognormal(0.0, 0.5, 50) for _ in range(40)]
    second = [rng.lognormal(0.3, 0.5, 50) for _ in range(30)]
    SEL, prom = sel(name), prometheus
    server = LocalServer(model_dir, metrics_interval=0.05)
    try:
        server.wait_ready()
        prom.scrape(server.metrics_url)
        prom.wait_for(f"sum(mleops_rows_total{{{SEL}}})", lambda v: v == 0)
        ev = PrometheusEvidence(prom.url, name, labels={"job": "mleops-local"})
        cursor = ev.start("3", "3")
        n1, s1, ss1 = send(server, first)
        outside(server, 10)
        prom.wait_for(f"sum(mleops_rows_total{{{SEL}}})", lambda v: v == n1)
        prom.wait_for(f"sum(mleops_rows_outside_support_total{{{SEL}}})",
                      lambda v: v == 10)
        assert prom.value(f"sum(mleops_loglik_sum{{{SEL}}})") == pytest.approx(s1,
                                                                            rel=1e-9)
        sums, arms, cursor = ev.read("3", "3", cursor)
        assert sums["canary"].n == n1 and sums["canary"].total == pytest.approx(s1, 1e-9)
        assert sums["canary"].total_sq == pytest.approx(ss1, rel=1e-9)
        # the recording rules: the live average and the out-of-support share
        avg = prom.wait_for(f"mleops:loglik_avg:rate5m{{{SEL}}}",
                            lambda v: v == pytest.approx(s1 / n1, rel=1e-9))
        assert avg == pytest.approx(s1 / n1, rel=1e-9)
        prom.wait_for(f"mleops:outside_support:ratio_rate5m{{{SEL}}}",
                      lambda v: v == pytest.approx(10 / (n1 + 10), rel=1e-9))

        server.stop()  # the process restarts on the same scrape target (a pod restart)
        server = LocalServer(model_dir, metrics_interval=0.05,
                             metrics_port=server.metrics_port)
        server.wait_ready()
        # its series start at 0 (the old one went stale): Prometheus sees the whole rise
        prom.wait_for(f"sum(mleops_rows_total{{{SEL}}})", lambda v: v == 0)
        n2, s2, ss2 = send(server, second)
        prom.wait_for(f"sum(mleops_rows_total{{{SEL}}})", lambda v: v == n2)
        sums, arms, cursor = ev.read("3", "3", cursor)
        # the counter reset is seen per series: the new process's rows are all new
        assert sums["canary"].n == n2 and sums["canary"].total == pytest.approx(s2, 1e-9)
        assert arms["canary"]["rows"] == n1 + n2
        # The new process is a new series (worker_id): the 5m average spans both. Each
        # series is extrapolated to the window's edges by its own factor, so across a
        # restart the rule is close, not exact (within one process it is exact, above).
        both = (s1 + s2) / (n1 + n2)
        prom.wait_for(f"mleops:loglik_avg:rate5m{{{SEL}}}",
                      lambda v: v == pytest.approx(both, rel=0.05))
    finally:
        server.stop()


def test_prometheus_down_holds_then_the_same_rows_are_read(model_dir, name, tmp_path):
    """A scrape outage delays the evidence; nothing is lost or counted twice. (Its own two
    servers, not the worker's: the outage is a server stopped.)"""
    from mleops.rollout.backends.base import RolloutError

    SEL = sel(name)
    rng = np.random.default_rng(5)
    with LocalServer(model_dir, metrics_interval=0.05) as server:
        with prometheus_server(tmp_path / "p1") as prom:
            prom.scrape(server.metrics_url)
            prom.wait_for(f"sum(mleops_rows_total{{{SEL}}})", lambda v: v == 0)
            ev = PrometheusEvidence(prom.url, name)
            cursor = ev.start("3", "3")
            url = prom.url
        n, s, _ = send(server, [rng.lognormal(0.0, 0.5, 40) for _ in range(10)])
        with pytest.raises(RolloutError, match=f"Prometheus at {url}"):
            ev.read("3", "3", cursor)  # the controller holds on this (and times out)
        with prometheus_server(tmp_path / "p2") as prom:  # a new server, empty TSDB
            prom.scrape(server.metrics_url)
            prom.wait_for(f"sum(mleops_rows_total{{{SEL}}})", lambda v: v == n)
            ev.url = prom.url
            sums, arms, cursor = ev.read("3", "3", cursor)
    assert sums["canary"].n == n and sums["canary"].total == pytest.approx(s, rel=1e-9)


@pytest.mark.parametrize("shift,code", [(0.0, 0), (1.5, 4)])
def test_monitor_reads_drift_from_the_real_prometheus(model_dir, name, prometheus, shift,
                                                      code):
    """``mleops monitor --prometheus`` while live rows arrive: in distribution, no alarm;
    shifted by 1.5 (log scale), drift (exit 4)."""
    import subprocess
    import sys

    rng = np.random.default_rng(6)
    done = threading.Event()
    SEL, prom = sel(name), prometheus
    with LocalServer(model_dir, metrics_interval=0.05) as server:
        prom.scrape(server.metrics_url)
        prom.wait_for(f"sum(mleops_rows_total{{{SEL}}})", lambda v: v == 0)

        def traffic():
            while not done.is_set():
                send(server, [rng.lognormal(shift, 0.5, 50)])
                done.wait(0.05)

        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        try:
            out = subprocess.run(
                [sys.executable, "-m", "mleops.cli.main", "monitor", name, "--model-dir",
                 model_dir, "--prometheus", prom.url, "--interval", "1", "--duration", "12",
                 "--json"], capture_output=True, text=True, timeout=120)
        finally:
            done.set()
            t.join(10)
    assert out.returncode == code, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["rows"] > 0 and report["alarm"] is bool(code)


@contextlib.contextmanager
def scraping(prom, plane):
    """Keep Prometheus's targets on the plane's servers (the canary starts mid-rollout), as
    a PodMonitor follows pods."""
    stop = threading.Event()

    def follow():
        seen = None
        while not stop.wait(0.2):
            urls = sorted(s.metrics_url for s in list(plane.servers.values()))
            if urls != seen:
                prom.scrape(*urls)
                seen = urls

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


def _rollout(registry, runs, live_data, tmp_path, prom=None):  # noqa: F811
    """A fresh model (v1 champion, v3 worse on live data) canaried with one evidence source."""
    from mleops.rollout import Controller, FileStateStore, Guardrails, TestConfig

    name = f"lat-{uuid.uuid4().hex[:8]}"
    for key in ("good1", "good2", "bad"):
        registry.register(name, runs[key], tags={})
    registry.promote(name, "1")
    with _plane(name, registry) as plane, _client(plane, live_data, rate=50.0) as client, \
            (scraping(prom, plane) if prom else contextlib.nullcontext()):
        backend = plane.backend()
        if prom is not None:
            backend.evidence = PrometheusEvidence(prom.url, name, labels={"job": "mleops-local"})
            backend.pairs_rows = False
        ctl = Controller(FileStateStore(str(tmp_path / name)), backend, registry)
        ctl.start(name, "3", steps="10,50,100", test=TestConfig(min_drop=0.1),
                  guardrails=Guardrails(step_min_rows=100))
        state = ctl.run(name, interval=0.3, timeout=180)
    assert client.failed == 0, client.failures
    return state


def test_a_rollout_decided_from_prometheus_reaches_the_routers_decision(
        registry, runs, live_data, tmp_path, prometheus):  # noqa: F811
    """The same candidate, the same replayed rows: once scored from the router's row records,
    once from Prometheus scraping the servers (traffic still moved by the router)."""
    from_prometheus = _rollout(registry, runs, live_data, tmp_path, prometheus)
    from_router = _rollout(registry, runs, live_data, tmp_path)
    for state in (from_prometheus, from_router):
        assert state.phase == "rolled_back", state.reason
        assert state.verdict["decision"] == "rollback", state.verdict
    assert from_prometheus.verdict["rows_canary"] > 0
