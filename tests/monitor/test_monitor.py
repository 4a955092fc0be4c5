"""Drift monitoring: CUSUM calibration and power, sums == rows, state, Prometheus, plots, CLI."""

import json
import math
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from click.testing import CliRunner

import mleops
from mleops.artifact import ModelArtifact
from mleops.cli.main import main
from mleops.errors import DataError
from mleops.monitor import (
    PROM_METRICS,
    Baseline,
    CusumConfig,
    CusumDetector,
    MonitorError,
    cusum_threshold,
    model_baseline,
    monitor_rows,
    monitor_sums,
    query_prometheus,
    siegmund_arl,
    target_arl,
    watch_prometheus,
)
from mleops.plots import pit_values, plot_canary, plot_loglik_trend, plot_pit

SHAPE, LOC = 0.5, 0.3  # lognormal sigma and log-scale of the live data


@pytest.fixture(scope="module")
def champ(tmp_path_factory):
    """A lognormal champion saved as model.json, its model-implied baseline, a row sampler."""
    rng = np.random.default_rng(0)
    art = ModelArtifact.from_fit(mleops.fit(rng.lognormal(LOC, SHAPE, 3000), "lognormal"))
    d = tmp_path_factory.mktemp("champ")
    art.save(str(d))
    draw = lambda rng, n, scale=1.0: scale * rng.lognormal(  # noqa: E731
        math.log(art.params["scale"]), art.params["shape"], n)
    return {"art": art, "dir": str(d), "baseline": model_baseline(art), "draw": draw}


def windows_of(ll, size):
    return [(len(c), float(c.sum()), float(np.square(c).sum()))
            for c in np.split(ll, np.arange(size, ll.size, size))]


# --- the statistic -----------------------------------------------------------------------
def test_threshold_solves_siegmund_and_matches_simulated_run_length():
    h = cusum_threshold(0.5, 200.0)
    assert siegmund_arl(0.5, h) == pytest.approx(200.0, rel=1e-9)
    assert target_arl(0.01, 100) == pytest.approx(100 / -math.log(0.99))
    rng = np.random.default_rng(1)  # Gaussian window z-scores: the in-control case
    s, rl = np.zeros(3000), np.zeros(3000)
    for t in range(1, 20_000):
        alive = rl == 0
        if not alive.any():
            break
        s[alive] = np.maximum(0.0, s[alive] - np.clip(rng.standard_normal(alive.sum()), -4, 4)
                              - 0.5)
        rl[alive & (s > h)] = t
    assert (rl > 0).all() and rl.mean() == pytest.approx(200.0, rel=0.1)


def test_false_alarms_on_the_champions_own_distribution_stay_within_the_stated_rate(champ):
    rng = np.random.default_rng(2)
    cfg = CusumConfig(false_alarm=0.05, horizon=20)
    ll = champ["art"].loglik_rows(champ["draw"](rng, 200 * 2000)).reshape(200, 2000)
    alarms = sum(monitor_rows(row, champ["baseline"], cfg).alarm for row in ll)
    assert alarms <= 17  # Binomial(200, 0.05) exceeds 17 with probability 0.003


def test_alarm_within_a_bounded_number_of_rows_after_a_scale_shift(champ):
    rng = np.random.default_rng(3)
    art, draw = champ["art"], champ["draw"]
    for _ in range(20):
        x = np.concatenate([draw(rng, 1000), draw(rng, 2000, scale=1.5)])
        r = monitor_rows(art.loglik_rows(x), champ["baseline"], CusumConfig(horizon=30))
        assert r.alarm and 1000 < r.alarm_at_row <= 1500, r.reason
        assert "drift" in r.reason and r.windows[r.alarm_window]["z"] < -3


def test_a_single_absurd_row_does_not_alarm(champ):
    ll = champ["art"].loglik_rows(champ["draw"](np.random.default_rng(4), 2000)).copy()
    ll[500] = -1e6  # e.g. a value far in the tail
    assert not monitor_rows(ll, champ["baseline"], CusumConfig(horizon=20)).alarm


def test_sums_path_equals_row_path_on_the_same_windows(champ):
    rng = np.random.default_rng(5)
    x = np.concatenate([champ["draw"](rng, 1500), champ["draw"](rng, 1530, scale=1.3)])
    ll = champ["art"].loglik_rows(x)
    b, cfg = champ["baseline"], CusumConfig(horizon=31, serial=False)  # sums carry no order
    r = cfg.row_clip * b.sd
    clipped = np.clip(ll, b.mean - r, b.mean + r)  # rows winsorise, sums cannot: do it here
    assert (clipped != ll).sum() > 0
    rows, sums = monitor_rows(ll, b, cfg), monitor_sums(windows_of(clipped, cfg.window), b, cfg)
    assert rows.alarm and rows.alarm_at_row == sums.alarm_at_row
    assert len(rows.windows) == len(sums.windows) == 31  # the last 30 rows: >= min_rows
    np.testing.assert_allclose(rows.statistic, sums.statistic, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose([w["z"] for w in rows.windows], [w["z"] for w in sums.windows],
                               rtol=1e-9)


def test_state_round_trip_resumes_exactly(champ):
    ll = champ["art"].loglik_rows(champ["draw"](np.random.default_rng(6), 2345))
    b, cfg = champ["baseline"], CusumConfig(horizon=24)
    det = CusumDetector(b, cfg)
    det.update_rows(ll[:1234])  # ends mid-window: the pending sums must travel too
    resumed = CusumDetector.from_dict(json.loads(json.dumps(det.to_dict())))
    assert resumed.state.pending[0] == 34 and resumed.h == det.h
    resumed.update_rows(ll[1234:])
    resumed.finish()
    got, want = resumed.report().to_dict(), monitor_rows(ll, b, cfg).to_dict()
    for key in ("alarm", "alarm_at_row", "rows", "pending_rows", "threshold", "reason"):
        assert got[key] == want[key]
    for key in ("mean", "sd", "z", "statistic"):  # one window's sum was split in two
        np.testing.assert_allclose([w[key] for w in got["windows"]],
                                   [w[key] for w in want["windows"]], rtol=1e-12)
    with pytest.raises(DataError, match="malformed"):
        CusumDetector.from_dict({"baseline": {}, "config": {}})


def test_baseline_uncertainty_lowers_the_reference():
    b = Baseline(-1.0, 0.8, 400)
    det = CusumDetector(b, CusumConfig(false_alarm=0.02))
    assert det.reference_mean == pytest.approx(-1.0 - 2.326348 * 0.8 / 20, rel=1e-5)
    assert CusumDetector(Baseline(-1.0, 0.8, None)).reference_mean == -1.0
    with pytest.raises(DataError):
        Baseline(-1.0, 0.0, 10)
    with pytest.raises(DataError):
        CusumConfig(false_alarm=1.5)


# --- Prometheus --------------------------------------------------------------------------
class FakePrometheus:
    """Answers /api/v1/query like Prometheus; cumulative totals advance one snapshot per poll
    (a poll = one query per metric in PROM_METRICS order). Records every query."""

    def __init__(self, snapshots=(), mode="ok"):
        self.snapshots, self.mode, self.queries, self.poll = list(snapshots), mode, [], 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(url.query)
                fake.queries.append((url.path, q["query"][0], "time" in q))
                status, body = fake.answer(q["query"][0])
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body if isinstance(body, bytes) else json.dumps(body).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, promql):
        if self.mode == "error":
            return 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
        if self.mode == "garbage":
            return 200, b"<html>not prometheus</html>"
        if promql.startswith("scalar("):
            return 200, {"status": "success", "data": {"resultType": "scalar",
                                                         "result": [1.7e9, "42.5"]}}
        i = next(i for i, m in enumerate(PROM_METRICS) if m in promql)
        value = self.snapshots[min(self.poll, len(self.snapshots) - 1)][i]
        self.poll += i == len(PROM_METRICS) - 1
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [1.7e9, repr(float(value))]}]}}

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_query_prometheus_parses_answers_and_names_failures():
    with FakePrometheus([(10, -12.5, 30.0)]) as prom:
        assert query_prometheus(prom.url, "scalar(up)") == 42.5
        assert query_prometheus(prom.url, 'sum(mleops_rows_total{a="b"})', at=1.7e9) == [({}, 10.0)]
        assert prom.queries == [("/api/v1/query", "scalar(up)", False),
                                ("/api/v1/query", 'sum(mleops_rows_total{a="b"})', True)]
    for mode, message in (("error", "rejected .* bad_data parse error"), ("garbage", "malformed")):
        with FakePrometheus(mode=mode) as prom, pytest.raises(MonitorError, match=message):
            query_prometheus(prom.url, "up")
    url = prom.url  # stopped: nothing listens there any more
    with pytest.raises(MonitorError, match="unreachable"):
        query_prometheus(url, "up", timeout=2)


def _snapshots(ll, sizes, restart_at=None):
    """Cumulative totals after each window of ``sizes`` rows; the server restarts (totals back
    to zero) just before window ``restart_at``. Returns (snapshots, windows the monitor sees)."""
    snaps, seen, total, start = [(0.0, 0.0, 0.0)], [], np.zeros(3), 0
    for j, n in enumerate(sizes):
        chunk = ll[start:start + n]
        start += n
        w = np.array([n, chunk.sum(), np.square(chunk).sum()])
        total = w if j == restart_at else total + w
        snaps.append(tuple(total))
        if j != restart_at:
            seen.append(tuple(w))
    return snaps, seen


def test_watch_prometheus_uses_window_differences_and_survives_a_restart(champ):
    rng = np.random.default_rng(7)
    x = np.concatenate([champ["draw"](rng, 1200), champ["draw"](rng, 1200, scale=1.5)])
    ll = champ["art"].loglik_rows(x)
    sizes = rng.integers(60, 140, 30)
    snaps, seen = _snapshots(ll, sizes, restart_at=4)
    cfg = CusumConfig(horizon=30)
    with FakePrometheus(snaps) as prom:
        det = CusumDetector(champ["baseline"], cfg)
        report = watch_prometheus(det, prom.url, "latency", "7", interval=1.0, duration=30.0,
                                  sleep=lambda s: None)
    sel = 'registered_model="latency",registered_version="7"'
    assert [q for _, q, _ in prom.queries[:3]] == [f"sum({m}{{{sel}}})" for m in PROM_METRICS]
    assert all(path == "/api/v1/query" and timed for path, _, timed in prom.queries)
    expected = monitor_sums(seen, champ["baseline"], cfg)
    assert report.alarm and report.alarm_at_row == expected.alarm_at_row
    n_seen = len(report.windows)  # stopped polling at the alarm
    assert len(prom.queries) == 3 * (n_seen + 2)  # first snapshot + restart poll + windows
    np.testing.assert_allclose(report.statistic, expected.statistic[:n_seen], rtol=1e-9)


# --- plots -------------------------------------------------------------------------------
def _png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    return True


def test_plots_write_png_files(champ, tmp_path):
    rng = np.random.default_rng(8)
    x = np.concatenate([champ["draw"](rng, 1000), champ["draw"](rng, 1000, scale=1.5)])
    report = monitor_rows(champ["art"].loglik_rows(x), champ["baseline"])
    assert _png(plot_loglik_trend(report, str(tmp_path / "a" / "trend.png")))
    assert _png(plot_loglik_trend(report.to_dict(), str(tmp_path / "trend2.png")))
    u = pit_values(champ["art"], champ["draw"](rng, 2000))
    assert u.shape == (2000,) and 0.4 < u.mean() < 0.6
    assert _png(plot_pit(u, str(tmp_path / "pit.png")))
    champion = [(t, -1.0, -1.05, -0.95) for t in range(0, 10_000, 1000)]
    canary = [(t, -1.1 + t / 1e5, -1.2, -0.9) for t in range(1000, 10_000, 1000)]
    events = [(1000, "traffic 10%"), (4000, "traffic 50%"), (9000, "promote")]
    assert _png(plot_canary(champion, canary, str(tmp_path / "canary.png"), events=events))
    with pytest.raises(DataError):
        plot_canary(champion, [(1, 2)], str(tmp_path / "bad.png"))
    with pytest.raises(DataError):
        plot_pit([0.2, 1.5], str(tmp_path / "bad.png"))


# --- CLI ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(champ, tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(9)
    draw = champ["draw"]

    def write(name, values, header="latency"):
        path = d / name
        path.write_text(header + "\n" + "\n".join(values) + "\n")
        return str(path)

    fmt = lambda a: [f"{v:.10g}" for v in a]  # noqa: E731
    return {
        "good": write("good.csv", fmt(draw(rng, 2000))),
        "drifted": write("drifted.csv", fmt(np.concatenate([draw(rng, 1000),
                                                             draw(rng, 1000, scale=1.5)]))),
        "heldout": write("heldout.csv", fmt(draw(rng, 3000))),
        "shifted": write("shifted.csv", fmt(draw(rng, 3000, scale=1.5))),
        "shifted_validation": write("shifted_val.csv", fmt(draw(rng, 5000, scale=1.5))),
        "nan": write("nan.csv", fmt(draw(rng, 200)[:100]) + ["nan"] + fmt(draw(rng, 99))),
        "empty": write("empty.csv", []),
    }


def cli(*args):
    return CliRunner().invoke(main, ["monitor", "latency", *args])


def test_cli_exit_codes_say_drift_or_not(champ, files, tmp_path):
    good = cli("--model-dir", champ["dir"], "--data", files["good"])
    assert good.exit_code == 0, good.output
    assert "ok  no drift" in good.output and "model-implied" in good.output
    plot = tmp_path / "drift.png"
    bad = cli("--model-dir", champ["dir"], "--data", files["drifted"], "--json",
              "--plot", str(plot), "--baseline-data", files["heldout"])
    assert bad.exit_code == 4, bad.output
    out = json.loads(bad.stdout)
    assert out["alarm"] and 1000 < out["alarm_at_row"] <= 1500
    assert out["baseline"]["n"] == 3000 and "heldout.csv" in out["baseline"]["source"]
    assert out["plot"] == str(plot) and _png(plot)


@pytest.mark.parametrize("case, message", [
    ("nan", "missing/NaN"), ("empty", "no rows"), ("column", "'x' not found"),
    ("both", "exactly one of"), ("short", "fewer than one window"),
    ("rate", "'--false-alarm': 1.5 is not in the range")])
def test_cli_bad_input_exits_2_with_one_clear_line(champ, files, case, message, tmp_path):
    args = {"nan": ["--data", files["nan"]], "empty": ["--data", files["empty"]],
            "column": ["--data", files["good"], "--column", "x"],
            "both": ["--data", files["good"], "--prometheus", "http://127.0.0.1:9"],
            "short": ["--data", files["good"], "--window", "5000", "--min-rows", "5000"],
            "rate": ["--data", files["good"], "--false-alarm", "1.5"]}[case]
    r = cli("--model-dir", champ["dir"], *args)
    assert r.exit_code == 2 and message in r.output, r.output


def test_cli_state_resumes_across_runs(champ, files, tmp_path):
    state = tmp_path / "state.json"
    for i in (1, 2):
        r = cli("--model-dir", champ["dir"], "--data", files["good"], "--state", str(state),
                "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["rows"] == 2000 * i
    assert json.loads(state.read_text())["model"] == {"name": "latency", "version": "local"}


def test_cli_prometheus_mode(champ, tmp_path):
    rng = np.random.default_rng(10)
    good = champ["art"].loglik_rows(champ["draw"](rng, 2000))
    bad = champ["art"].loglik_rows(champ["draw"](rng, 2000, scale=1.5))
    for ll, code in ((good, 0), (bad, 4)):
        snaps, _ = _snapshots(ll, [100] * 20)
        with FakePrometheus(snaps) as prom:
            r = cli("--model-dir", champ["dir"], "--prometheus", prom.url, "--registered-version",
                    "7", "--interval", "0.01", "--duration", "0.2")
        assert r.exit_code == code, r.output
        assert 'registered_version="7"' in prom.queries[0][1]
    with FakePrometheus([(500, -600.0, 900.0)]) as prom:  # no traffic: totals stand still
        r = cli("--model-dir", champ["dir"], "--prometheus", prom.url, "--registered-version",
                "7", "--interval", "0.01", "--duration", "0.05")
    assert r.exit_code == 0 and "no windows scored yet" in r.output, r.output
    r = cli("--model-dir", champ["dir"], "--prometheus", prom.url, "--registered-version", "7")
    assert r.exit_code == 1 and "unreachable" in r.output  # stopped: nothing listens
    r = cli("--model-dir", champ["dir"], "--prometheus", "http://127.0.0.1:9")
    assert r.exit_code == 2 and "--registered-version" in r.output


def test_cli_on_drift_retrain_runs_the_pipeline_with_the_drifted_rows(champ, files,
                                                                      monkeypatch):
    import mleops.pipeline.runner as runner

    seen = []

    def fake_run(req, **kw):
        seen.append((req, kw))
        return {"run_id": "r1", "gate": {"passed": True, "reasons": []},
                "registered_version": "2"}

    monkeypatch.setattr(runner, "run_pipeline", fake_run)
    r = cli("--model-dir", champ["dir"], "--data", files["drifted"], "--on-drift", "retrain",
            "--pipeline-args", "--gate-tolerance 0.01 --pipeline-root /tmp/x --no-cache")
    assert r.exit_code == 4 and "registered version 2" in r.output, r.output
    (req, kw), = seen
    assert (req.data_uri, req.family, req.model_name) == (files["drifted"], "lognormal",
                                                          "latency")
    assert req.gate_tolerance == 0.01 and req.gate_test == "z"
    assert kw == {"host": None, "pipeline_root": "/tmp/x", "enable_caching": False}
    assert cli("--model-dir", champ["dir"], "--data", files["good"], "--on-drift",
               "retrain").exit_code == 0 and len(seen) == 1
    bad = cli("--model-dir", champ["dir"], "--data", files["drifted"], "--on-drift", "retrain",
              "--pipeline-args", "--gate-test nope")
    assert bad.exit_code == 2 and "--on-drift retrain" in bad.output


@pytest.mark.slow
def test_registry_champion_and_retrain_through_the_real_pipeline(mlflow_server, champ,  # noqa: F811
                                                                 files, tmp_path):
    """The champion and its logged held-out baseline come from MLflow; drift retrains through
    the kfp local runner and registers the new model as challenger."""
    import os
    import subprocess
    import sys
    import uuid

    from mleops.registry.registry import Registry

    name, reg = f"latency-{uuid.uuid4().hex[:8]}", Registry(mlflow_server)
    held = champ["art"].loglik_rows(champ["draw"](np.random.default_rng(11), 2000))
    # what the pipeline's evaluate step logs (no sd: the monitor takes it from the model)
    metrics = {"heldout_avg_loglik": float(held.mean()), "heldout_n": 2000.0}
    run_id = reg.log_training_run(experiment=name, params={}, metrics=metrics,
                                  artifact=champ["art"])
    assert reg.register(name, run_id, tags={}) == "1"
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "mleops"), "monitor", name,
         "--tracking-uri", mlflow_server, "--data", files["shifted"], "--json",
         "--on-drift", "retrain", "--pipeline-args",
         f"--pipeline-root {tmp_path / 'root'} --validation-data {files['shifted_validation']}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "MLEOPS_JAX_CACHE": "off"})
    assert out.returncode == 4, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["version"] == "1" and report["alarm"]
    assert report["baseline"]["mean"] == pytest.approx(metrics["heldout_avg_loglik"])
    assert report["baseline"]["n"] == 2000 and "sd model-implied" in report["baseline"]["source"]
    assert report["retrain"]["registered_version"] == "2", report["retrain"]["gate"]["reasons"]
    assert {v["version"]: v["aliases"] for v in reg.list_versions(name)} == {
        "1": ["champion"], "2": ["challenger"]}


def test_serially_correlated_rows_do_not_page_and_a_slowdown_still_does():
    """AR(1) rows at rho 0.5 triple a window mean's variance; the detector widens its z by
    the live rows' long-run variance factor (benchmarks/drift_monitor.py measures at scale)."""
    from scipy import signal

    rng = np.random.default_rng(3)

    def ar(n):
        e = rng.standard_normal(n)
        return np.concatenate([e[:1], signal.lfilter([np.sqrt(0.75)], [1.0, -0.5], e[1:],
                                                     zi=[0.5 * e[0]])[0]])

    base, cfg = Baseline(-1.0, 0.8, 5000), CusumConfig(horizon=1000, window=100)
    alarms = 0
    for _ in range(40):
        det = CusumDetector(base, cfg)
        det.update_rows(-1.0 + 0.8 * ar(100_000))
        alarms += det.alarm
        assert 2.4 < det.serial_factor < 3.3  # (1 + rho) / (1 - rho) = 3, Bartlett-truncated
    assert alarms <= 1
    det = CusumDetector(base, cfg)
    det.update_rows(-1.0 + 0.8 * ar(2000))
    det.update_rows(-1.0 - np.log(1.6) + 0.8 * ar(1000))
    # 7 windows: the factor is now ~3.0 (the truth for a window of 100 rows: 2.96), where
    # Newey-West's 10 lags alone gave ~2.7 and this series alarmed one window sooner
    assert det.alarm and det.state.alarm_window - 19 <= 7
    assert CusumDetector.from_dict(det.to_dict()).serial_factor == det.serial_factor
