"""``mleops judge`` by contract: exact PromQL to a Prometheus-speaking server on 127.0.0.1,
the controller's decisions (rollback, promote, hold then time out) over HTTP, the rate limit,
a restart resuming from its state directory, refused requests, Flagger's status codes."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from support.prometheus import binary
from support.prometheus_stub import Prometheus

from mleops.errors import DataError
from mleops.rollout import Guardrails, TestConfig
from mleops.rollout.backends.prometheus import SERIES
from mleops.rollout.judge.core import Judge, JudgeFull
from mleops.rollout.judge.server import JudgeServer

SEL = 'namespace="models",registered_model="claims",registered_version="{v}"'
TEST = TestConfig(min_rows=100, min_units=8, min_blocks=8)
GUARD = Guardrails(step_min_rows=200, metrics_timeout_s=120.0, hold_after_s=40.0)
JUDGE = "/v1/judge/claims?canary=4&champion=3"


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Feed:
    """Cumulative counters of one pod per version, advanced by drawn log-likelihoods."""

    def __init__(self, prom: Prometheus, seed: int = 0):
        self.prom, self.rng = prom, np.random.default_rng(seed)
        self.totals = {"4": np.zeros(4), "3": np.zeros(4)}
        for v in self.totals:
            prom.totals(v, {f"p-{v}": tuple(self.totals[v])})

    def add(self, version: str, n: int, mean: float, sd: float = 1.0) -> None:
        x = self.rng.normal(mean, sd, n)
        self.totals[version] += (n, x.sum(), (x * x).sum(), 0)
        self.prom.totals(version, {f"p-{version}": tuple(self.totals[version])})


@pytest.fixture
def prom():
    p = Prometheus(SEL)
    yield p
    p.stop()


@contextlib.contextmanager
def serving(prom, clock, **kw):
    kw = {"labels": {"namespace": "models"}, "test": TEST, "guardrails": GUARD,
          "min_interval_s": 10.0, "clock": clock, **kw}
    with JudgeServer(Judge(prom.url, **kw)) as server:
        yield server


def call(url: str, path: str, body: dict | None = None, *, content_type="application/json",
         headers: dict | None = None) -> tuple[int, dict | str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={
        **({"Content-Type": content_type} if data is not None else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode()
    return status, (json.loads(text) if text.startswith("{") else text)


def hook(url: str, which: str, model="claims", canary="4", champion="3") -> tuple[int, dict]:
    payload = {"name": "claims", "namespace": "models", "phase": "Progressing",
               "checksum": "abc", "metadata": {"model": model, "canary": canary,
                                               "champion": champion}}
    return call(url, f"/v1/flagger/{which}", payload)


def drive(server, feed, clock, canary_mean: float, ticks: int = 200) -> list[dict]:
    """Ticks (each past the rate limit, each a block of both arms) until a final answer."""
    answers = []
    for _ in range(ticks):
        feed.add("4", 30, canary_mean)
        feed.add("3", 30, -1.0)
        clock.t += 15
        status, answer = call(server.url, JUDGE)
        assert status == 200, answer
        answers.append(answer)
        if answer["decision"] != "continue":
            break
    return answers


def test_first_request_starts_the_cursor_with_the_exact_queries(prom):
    clock = Clock()
    feed = Feed(prom)
    feed.add("4", 500, -9.0)  # earlier traffic: not this analysis's evidence
    with serving(prom, clock) as server:
        status, first = call(server.url, JUDGE)
        assert status == 200 and first["decision"] == "continue"
        assert first["reason"].startswith("started") and not first["cached"]
        assert prom.queries == prom.series_queries("4") + prom.series_queries("3")
        assert prom.queries[0] == ('mleops_rows_total{namespace="models",'
                                   'registered_model="claims",registered_version="4"}')
        feed.add("4", 30, -1.0)
        feed.add("3", 40, -1.0)
        clock.t += 15
        status, second = call(server.url, JUDGE)
    assert (second["rows_canary"], second["rows_champion"]) == (30, 40)
    assert second["decision"] == "continue" and second["ticks"] == 2
    assert len(prom.queries) == 2 * 2 * len(SERIES)  # two reads, two arms, each series


def test_a_worse_canary_is_rolled_back_and_flagger_is_told_so(prom):
    clock = Clock()
    feed = Feed(prom, seed=1)
    with serving(prom, clock) as server:
        call(server.url, JUDGE)
        answers = drive(server, feed, clock, canary_mean=-1.6)
        last = answers[-1]
        assert last["decision"] == "rollback", last
        assert "live log-likelihood dropped" in last["reason"]
        assert last["log_e_rollback"] >= last["threshold_rollback"]
        assert all(a["decision"] == "continue" for a in answers[:-1])
        seen = len(prom.queries)
        clock.t += 1000  # final: answered again without reading Prometheus
        status, again = call(server.url, JUDGE)
        assert status == 200 and again["decision"] == "rollback" and again["cached"]
        assert hook(server.url, "rollback")[0] == 200
        status, body = hook(server.url, "confirm-promotion")
        assert status == 409 and body["decision"] == "rollback"
        assert len(prom.queries) == seen
        status, metrics = call(server.url, "/metrics")
    line = ('mleops_judge_log_e{canary="4",champion="3",hypothesis="rollback",'
            'model="claims"}')
    assert status == 200 and line in metrics
    value = float(metrics.split(line, 1)[1].split()[0])
    assert value == pytest.approx(last["log_e_rollback"])


def test_a_canary_as_good_is_promoted_after_enough_rows(prom):
    clock = Clock()
    feed = Feed(prom, seed=2)
    with serving(prom, clock) as server:
        call(server.url, JUDGE)
        status, body = hook(server.url, "confirm-promotion")
        assert status == 409 and body["decision"] == "continue"  # not yet: wait
        answers = drive(server, feed, clock, canary_mean=-1.0)
        last = answers[-1]
        assert last["decision"] == "promote", last
        assert last["rows_canary"] >= GUARD.step_min_rows
        assert last["log_e_not_worse"] >= last["threshold_not_worse"]
        assert hook(server.url, "confirm-promotion")[0] == 200
        assert hook(server.url, "rollback")[0] == 409


def test_prometheus_down_holds_then_rolls_back_at_the_metrics_timeout(prom):
    clock = Clock()
    feed = Feed(prom, seed=3)
    with serving(prom, clock) as server:
        call(server.url, JUDGE)
        feed.add("4", 30, -1.0)
        feed.add("3", 30, -1.0)
        clock.t += 15
        assert call(server.url, JUDGE)[1]["rows_canary"] == 30
        prom.down = True
        clock.t += 15
        status, held = call(server.url, JUDGE)
        assert status == 200 and held["decision"] == "continue"
        assert held["reason"].startswith("holding: cannot read metrics")
        assert hook(server.url, "rollback")[0] == 409  # holding is not a rollback
        clock.t += GUARD.metrics_timeout_s
        status, gone = call(server.url, JUDGE)
    assert gone["decision"] == "rollback" and "no canary metrics for" in gone["reason"]


def test_prometheus_down_from_the_first_request(prom):
    clock = Clock()
    prom.down = True
    with serving(prom, clock) as server:
        first = call(server.url, JUDGE)[1]
        assert first["decision"] == "continue" and first["reason"].startswith("holding")
        clock.t += GUARD.metrics_timeout_s
        assert call(server.url, JUDGE)[1]["decision"] == "rollback"


def test_faster_polls_get_the_last_answer_without_reading_prometheus(prom):
    clock = Clock()
    Feed(prom)
    with serving(prom, clock) as server:
        first = call(server.url, JUDGE)[1]
        seen = len(prom.queries)
        clock.t += 9.9
        again = call(server.url, JUDGE)[1]
        assert again["cached"] and again["ticks"] == 1 and len(prom.queries) == seen
        assert {**again, "cached": False} == first
        clock.t += 0.1
        later = call(server.url, JUDGE)[1]
    assert not later["cached"] and later["ticks"] == 2 and len(prom.queries) == 2 * seen


def test_a_restarted_judge_resumes_from_its_state_dir(tmp_path):
    """Same counters, one judge restarted halfway: the same answers as one that was not."""
    def run(state_dir, restart_at):
        clock, out, p = Clock(), [], Prometheus(SEL)
        feed = Feed(p, seed=4)
        try:
            while not out or out[-1]["decision"] == "continue":
                assert len(out) < 200
                with serving(p, clock, state_dir=state_dir) as server:
                    while True:
                        if out:
                            feed.add("4", 30, -1.25)
                            feed.add("3", 30, -1.0)
                            clock.t += 15
                        out.append(call(server.url, JUDGE)[1])
                        if out[-1]["decision"] != "continue" or len(out) == restart_at:
                            break
        finally:
            p.stop()
        return out

    whole = run(None, restart_at=0)
    resumed = run(str(tmp_path / "state"), restart_at=len(whole) // 2)
    assert len(whole) > 4 and whole[-1]["decision"] != "continue"
    assert (tmp_path / "state" / "claims@4@3.json").is_file()
    assert resumed == whole


def test_bad_requests_are_refused_with_one_json_line_and_the_server_stays_up(prom):
    clock = Clock()
    with serving(prom, clock) as server:
        for path, code, words in [
            ("/v1/judge/claims?canary=4&champion=3&alpha=0.5", 400, "unknown query"),
            ("/v1/judge/claims?canary=4", 400, "missing query"),
            ("/v1/judge/claims?canary=4&canary=5&champion=3", 400, "more than once"),
            ("/v1/judge/claims?canary=3&champion=3", 400, "same version"),
            ("/v1/judge/cl%20aims?canary=4&champion=3", 400, "invalid model"),
            ("/v1/judge/claims?canary=4%2F..&champion=3", 400, "invalid canary"),
            ("/v1/judge/a/b?canary=4&champion=3", 400, "one model"),
            ("/v1/nothing", 404, "no route"),
        ]:
            status, body = call(server.url, path)
            assert status == code and words in body["error"], (path, body)
            assert body["decision"] == "error"  # a verdict: the templates fail on it
            assert sorted(body) == ["decision", "error"] and "\n" not in body["error"]
        assert call(server.url, JUDGE, headers={"Host": "evil.example"})[0] == 403
        assert call(server.url, "/v1/flagger/rollback", {"name": "x"})[0] == 400
        assert call(server.url, "/v1/flagger/rollback", {"metadata": {"model": "claims"}},
                    )[0] == 400
        assert call(server.url, "/v1/flagger/rollback", {"metadata": {}},
                    content_type="text/plain")[0] == 415
        assert call(server.url, "/v1/flagger/nope", {})[0] == 404
        assert hook(server.url, "rollback", canary="3")[0] == 400
        assert prom.queries == []  # nothing refused reached Prometheus
        assert call(server.url, "/healthz") == (200, {"ok": True})


def test_tracked_analyses_are_bounded_and_only_ended_ones_are_evicted(prom, tmp_path):
    clock = Clock()
    prom.down = True
    judge = Judge(prom.url, test=TEST, guardrails=GUARD, clock=clock, max_keys=2,
                  state_dir=str(tmp_path))
    judge.judge("a", "2", "1")
    judge.judge("b", "2", "1")
    with pytest.raises(JudgeFull):
        judge.judge("c", "2", "1")
    clock.t += GUARD.metrics_timeout_s
    assert judge.judge("a", "2", "1")["decision"] == "rollback"  # ended: may be evicted
    assert judge.judge("c", "2", "1")["decision"] == "continue"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b@2@1.json", "c@2@1.json"]
    assert b'model="a"' not in judge.metrics()
    with pytest.raises(DataError, match="invalid model"):
        judge.judge("../x", "2", "1")


class Exporter:
    """A scrape target on 127.0.0.1: one pod's cumulative series per version of ``model``, in
    prometheus_client's text format (what the model servers export)."""

    def __init__(self, model: str, seed: int = 5):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from prometheus_client import CollectorRegistry, Gauge, generate_latest

        registry, self.rng = CollectorRegistry(), np.random.default_rng(seed)
        self.model = model
        self.gauges = [Gauge(name, "test series", ["registered_model", "registered_version",
                                                   "pod"], registry=registry)
                       for name in SERIES]
        self.rows: dict[str, float] = {}
        for v in ("4", "3"):
            self.add(v, 0, 0.0)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, version: str, n: int, mean: float) -> None:
        x = self.rng.normal(mean, 1.0, n)
        for g, inc in zip(self.gauges, (n, x.sum(), (x * x).sum(), 0.0)):
            g.labels(self.model, version, f"p-{version}").inc(inc)
        self.rows[version] = self.rows.get(version, 0.0) + n

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
@pytest.mark.skipif(binary() is None, reason="needs Debian's prometheus")
def test_the_cli_rolls_back_a_worse_canary_read_from_the_real_prometheus(tmp_path,
                                                                          prometheus):
    # a model name of its own: the worker's Prometheus keeps earlier tests' series
    m = f"lat-{uuid.uuid4().hex[:8]}"
    exporter = Exporter(m)
    log = open(tmp_path / "judge.log", "w")
    try:
        prom = prometheus
        prom.scrape(exporter.url)
        prom.wait_for(f'count(mleops_rows_total{{registered_model="{m}"}})',
                      lambda v: v == 2)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mleops.cli.main", "judge", "--prometheus", prom.url,
             "--port", "0", "--min-interval", "0", "--evidence-label", "job=mleops-local",
             "--state-dir", str(tmp_path / "state")],
            stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            url = json.loads(proc.stdout.readline())["url"]
            assert url.startswith("http://127.0.0.1:")
            answer = call(url, f"/v1/judge/{m}?canary=4&champion=3")[1]
            assert answer["decision"] == "continue", answer
            for _ in range(150):
                exporter.add("4", 40, -2.0)
                exporter.add("3", 40, -1.0)
                for v in ("4", "3"):  # each tick reads what this round added: one block
                    prom.wait_for(f'sum(mleops_rows_total{{registered_model="{m}",'
                                  f'registered_version="{v}"}})',
                                  lambda x, v=v: x == exporter.rows[v])
                status, answer = call(url, f"/v1/judge/{m}?canary=4&champion=3")
                assert status == 200, answer
                if answer["decision"] != "continue":
                    break
            assert answer["decision"] == "rollback", answer
            assert answer["rows_canary"] == exporter.rows["4"]
            assert hook(url, "rollback", model=m)[0] == 200
            assert f'hypothesis="rollback",model="{m}"' in call(url, "/metrics")[1]
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(30)
            proc.stdout.close()
        assert rc == 0, (tmp_path / "judge.log").read_text()[-2000:]
    finally:
        exporter.stop()
        log.close()
