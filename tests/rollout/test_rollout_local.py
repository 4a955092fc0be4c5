"""Canary rollouts with real processes: a real `mlflow server`, real seldon-core model servers
behind the router, the `mleops rollout` CLI as its own process, and a client that counts every
answer it gets. Each test has its own registered model, so tests run in any order/worker.

Data: latencies ~ lognormal(0, 0.5). v1 (champion) and v2 are fits to two samples of it; v3 is
fitted to lognormal(0.6, 0.5): on live data it loses about 0.7 nats/row.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pytest

import mleops
from mleops.artifact import ModelArtifact
from mleops.registry.registry import Registry
from mleops.rollout import FileStateStore
from mleops.rollout.backends.local.backend import LocalDataPlane
from mleops.rollout.backends.local.replay import Replayer
from mleops.serving.process import free_port

pytestmark = pytest.mark.slow
MLEOPS = [sys.executable, "-m", "mleops.cli.main"]
FAST = ["--steps", "10,50,100", "--step-min-rows", "100", "--min-drop", "0.1",
        "--interval", "0.3"]


@pytest.fixture(scope="module")
def registry(mlflow_server):  # noqa: F811
    return Registry(mlflow_server, retries=2, backoff=0.1)


@pytest.fixture(scope="module")
def runs(registry):
    """Logged runs: two good fits, one bad, one whose model.json no server can load."""
    rng = np.random.default_rng(7)
    out = {}
    for key, mu in (("good1", 0.0), ("good2", 0.0), ("bad", 0.6)):
        art = ModelArtifact.from_fit(mleops.fit(rng.lognormal(mu, 0.5, 3000), "lognorm"))
        out[key] = registry.log_training_run(experiment="rollout-tests", params={"key": key},
                                             metrics={}, artifact=art)
    broken = ModelArtifact.from_fit(mleops.fit(rng.lognormal(0, 0.5, 500), "lognorm"))
    broken.family = {**broken.family, "name": "no-such-family"}
    out["broken"] = registry.log_training_run(experiment="rollout-tests", params={}, metrics={},
                                              artifact=broken)
    return out


@pytest.fixture
def model(registry, runs):
    """A fresh registered model: v1 champion, v2 good, v3 bad, v4 unloadable."""
    name = f"lat-{uuid.uuid4().hex[:8]}"
    for key in ("good1", "good2", "bad", "broken"):
        registry.register(name, runs[key], tags={})
    registry.promote(name, "1")
    return name


@pytest.fixture(scope="module")
def live_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "live.csv"
    x = np.random.default_rng(99).lognormal(0.0, 0.5, 4000)
    path.write_text("x\n" + "\n".join(f"{v:.6f}" for v in x) + "\n")
    return str(path)


def _cli(*args, env=None, timeout=240):
    """The CLI as its own process. A rollout it drives is bounded by the CLI's own
    ``--timeout`` first (it then prints the state it stopped in), the process by ``timeout``;
    a hang fails with everything the process printed."""
    args = list(args)
    if args[:1] == ["rollout"] and args[1:2] in (["start"], ["resume"]) and \
            "--detach" not in args and "--timeout" not in args:
        args += ["--timeout", str(timeout - 60)]
    try:
        return subprocess.run([*MLEOPS, *args], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
            else e.stdout or ""
        err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) \
            else e.stderr or ""
        pytest.fail(f"`mleops {' '.join(args)}` still running after {timeout} s\n"
                    f"stdout: {out[-6000:]}\nstderr: {err[-3000:]}")


def _routes(url):
    from mleops.rollout.backends.local.admin import read_credentials

    admin, token = read_credentials(url)
    req = urllib.request.Request(f"{admin}/admin/routes", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def _plane(name, registry):
    with LocalDataPlane(name, tracking_uri=registry.uri) as plane:
        yield plane


def _client(plane, live_data, rate=40.0):
    from mleops.rollout.backends.local.replay import load_rows

    rows, names = load_rows(live_data)
    return Replayer(plane.url, rows, names, rate=rate, batch=20, wire=plane.wire)


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_good_canary_is_promoted_unattended(model, registry, live_data, tmp_path,
                                            mlflow_server, protocol):  # noqa: F811
    """The CLI starts its own data plane (OIP v2 servers by default, Seldon's with
    ``--protocol v1``), replays live rows, promotes; no request fails."""
    r = _cli("rollout", "start", model, "--candidate-version", "2", "--tracking-uri",
             mlflow_server, "--state-dir", str(tmp_path), "--replay", live_data, "--rate", "50",
             "--protocol", protocol, *FAST, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    state = json.loads(r.stdout[r.stdout.index("{"):])
    assert state["phase"] == "promoted" and state["verdict"]["decision"] == "not_worse"
    assert [e["weight"] for e in state["history"] if e["event"] == "step"] == [50, 100]
    assert ", 0 failed" in r.stderr, r.stderr
    assert registry.champion(model)[0] == "2"
    tags = {v["version"]: v["tags"] for v in registry.list_versions(model)}
    assert tags["2"]["mleops.rollout"] == "promoted"
    status = _cli("rollout", "status", model, "--state-dir", str(tmp_path))
    assert status.returncode == 0 and "promoted" in status.stdout


def test_worse_canary_in_shadow_mode_is_rolled_back(model, registry, live_data, tmp_path,
                                                    mlflow_server):  # noqa: F811
    """A separate data plane process (`mleops rollout serve`); the champion answers every
    request, the bad canary scores mirrored rows and is rolled back on the paired test."""
    registry.promote(model, "3", alias="challenger")
    port = free_port()
    plane = subprocess.Popen([*MLEOPS, "rollout", "serve", model, "--port", str(port),
                              "--tracking-uri", mlflow_server], stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        info = json.loads(plane.stdout.readline())
        url = info["router"]
        assert info["champion"]["version"] == "1" and url.startswith("http://127.0.0.1:")
        from mleops.rollout.backends.local.replay import load_rows

        rows, names = load_rows(live_data)
        with Replayer.for_plane(url, rows, names, rate=40, batch=20) as client:
            r = _cli("rollout", "start", model, "--candidate-version", "3", "--mode", "shadow",
                     "--router", url, "--tracking-uri", mlflow_server, "--state-dir",
                     str(tmp_path), *FAST)
            time.sleep(1.0)  # a few answers after the rollback, too
        assert r.returncode == 3, r.stdout + r.stderr
        assert client.sent > 20 and client.failed == 0, client.failures
        state = FileStateStore(str(tmp_path)).load(model)
        assert state.phase == "rolled_back" and "log-likelihood dropped" in state.reason
        assert state.verdict["mean_diff"] < -0.3
        routes = _routes(url)
        assert routes["canary"] is None and routes["weight"] == 0
        assert routes["champion"]["version"] == "1"
        assert registry.champion(model)[0] == "1"
        versions = {v["version"]: v for v in registry.list_versions(model)}
        tags = {k: v["tags"] for k, v in versions.items()}
        assert tags["3"]["mleops.rollout"] == "rolled_back"
        assert "challenger" not in versions["3"]["aliases"]  # v3's until the rollback
        assert "dropped" in tags["3"]["mleops.rollout_reason"]
        stats = json.loads(tags["3"]["mleops.rollout_stats"])
        assert stats["mode"] == "shadow" and stats["verdict"]["decision"] == "rollback"
    finally:
        plane.send_signal(signal.SIGTERM)
        try:
            plane.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(plane.pid, signal.SIGKILL)
            plane.wait(10)


def test_killed_canary_is_rolled_back_without_failed_requests(model, registry, live_data,
                                                              tmp_path):
    from mleops.rollout import Controller, Guardrails, TestConfig

    with _plane(model, registry) as plane, _client(plane, live_data) as client:
        ctl = Controller(FileStateStore(str(tmp_path)), plane.backend(), registry)
        ctl.start(model, "2", steps="50,100", test=TestConfig(min_drop=0.1),
                  guardrails=Guardrails(step_min_rows=100_000))  # only the kill can end it
        for _ in range(20):
            state = ctl.tick(model)
            time.sleep(0.2)
        assert state.phase == "progressing" and state.verdict["rows_canary"] > 0
        plane.servers["2"].proc.kill()  # SIGKILL: connection refused from now on
        state = ctl.run(model, interval=0.2, timeout=60)
        time.sleep(0.5)
    assert state.phase == "rolled_back" and "error rate" in state.reason, state.reason
    assert client.sent > 50 and client.failed == 0, client.failures
    assert registry.champion(model)[0] == "1"


def test_restarted_controller_resumes_and_decides(model, registry, live_data, tmp_path,
                                                  mlflow_server):  # noqa: F811
    """Controller: `start --detach`, `resume` killed with SIGKILL mid-rollout, `resume` again."""
    common = ["--tracking-uri", mlflow_server, "--state-dir", str(tmp_path)]
    store = FileStateStore(str(tmp_path))
    with _plane(model, registry) as plane, _client(plane, live_data) as client:
        r = _cli("rollout", "start", model, "--candidate-version", "2", "--router", plane.url,
                 "--detach", *common, "--steps", "10,25,50,100", "--step-min-rows", "150",
                 "--min-drop", "0.1")
        assert r.returncode == 0, r.stderr
        first = subprocess.Popen([*MLEOPS, "rollout", "resume", model, *common, "--interval",
                                  "0.3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and store.load(model).step_index < 1:
            time.sleep(0.2)
        first.kill()
        first.wait(10)
        killed_at = store.load(model)
        assert killed_at.phase == "progressing" and killed_at.step_index >= 1
        r = _cli("rollout", "resume", model, *common, "--interval", "0.3", "--json")
        time.sleep(0.5)
    state = json.loads(r.stdout[r.stdout.index("{"):])
    assert r.returncode == 0 and state["phase"] == "promoted", (
        f"{state['phase']}: {state['reason']}\n{state['history'][-8:]}\n{r.stderr[-2000:]}")
    assert [e["event"] for e in state["history"]].count("started") == 1  # not restarted
    assert state["verdict"]["rows_canary"] > killed_at.verdict["rows_canary"]
    steps = [e["weight"] for e in state["history"] if e["event"] == "step"]
    assert steps == [25, 50, 100]
    assert client.failed == 0, client.failures
    assert registry.champion(model)[0] == "2"


def test_missing_or_unloadable_candidate_is_refused(model, registry, tmp_path,
                                                    mlflow_server):  # noqa: F811
    common = ["--tracking-uri", mlflow_server, "--state-dir", str(tmp_path)]
    with _plane(model, registry) as plane:
        r = _cli("rollout", "start", model, "--candidate-version", "99", "--router", plane.url,
                 *common)
        assert r.returncode == 2 and "no version 99" in r.stderr, r.stderr
        assert FileStateStore(str(tmp_path)).load(model) is None
        r = _cli("rollout", "start", model, "--candidate-version", "4", "--router", plane.url,
                 *common)
        assert r.returncode == 1 and "refused before any traffic moved" in r.stderr, r.stderr
        assert "no-such-family" in r.stderr
        routes = _routes(plane.url)
        assert routes["canary"] is None and routes["weight"] == 0
        assert FileStateStore(str(tmp_path)).load(model).phase == "failed"
        assert set(plane.servers) == {"1"}  # no stray canary process


def test_abort_rolls_back_a_detached_rollout(model, registry, live_data, tmp_path,
                                            mlflow_server):  # noqa: F811
    common = ["--tracking-uri", mlflow_server, "--state-dir", str(tmp_path)]
    with _plane(model, registry) as plane, _client(plane, live_data) as client:
        r = _cli("rollout", "start", model, "--candidate-version", "2", "--router", plane.url,
                 "--detach", "--confirm-before-promote", *common, *FAST[:4])
        assert r.returncode == 0, r.stderr
        assert _routes(plane.url)["weight"] == 10
        again = _cli("rollout", "start", model, "--candidate-version", "2", "--router",
                     plane.url, "--detach", *common, *FAST[:4])
        assert again.returncode == 1, again.stdout + again.stderr
        assert f"model {model!r} already has a rollout in progress (candidate version 2" in \
            again.stderr
        assert _routes(plane.url)["weight"] == 10  # the running one untouched
        r = _cli("rollout", "abort", model, "--reason", "pager went off", *common)
        assert r.returncode == 0 and "rolled_back" in r.stdout, r.stdout + r.stderr
        routes = _routes(plane.url)
        assert routes["canary"] is None and routes["weight"] == 0
        time.sleep(0.5)
    assert client.failed == 0
    tags = {v["version"]: v["tags"] for v in registry.list_versions(model)}
    assert "pager went off" in tags["2"]["mleops.rollout_reason"]


def test_a_rollback_killed_in_flight_finishes_on_resume(model, registry, live_data, tmp_path,
                                                        mlflow_server):  # noqa: F811
    """`abort` killed right after saving its intent (before traffic moved): `resume` finishes
    the rollback instead of failing on a canary it cannot find or re-asserting its weight."""
    common = ["--tracking-uri", mlflow_server, "--state-dir", str(tmp_path)]
    with _plane(model, registry) as plane, _client(plane, live_data) as client:
        r = _cli("rollout", "start", model, "--candidate-version", "2", "--router", plane.url,
                 "--detach", "--confirm-before-promote", *common, *FAST[:4])
        assert r.returncode == 0, r.stderr
        r = _cli("rollout", "abort", model, *common,
                 env={"MLEOPS_FAILPOINTS": "rollback.intent_saved"})
        assert r.returncode == 137
        assert _routes(plane.url)["weight"] == 10  # killed before the traffic moved
        r = _cli("rollout", "resume", model, *common, "--interval", "0.2", "--timeout", "60")
        assert r.returncode == 3, r.stdout + r.stderr  # rolled back
        routes = _routes(plane.url)
        assert routes["canary"] is None and routes["weight"] == 0
    assert client.failed == 0
    assert registry.champion(model)[0] == "1"


@pytest.mark.parametrize("failpoint", ["promote.decided", "promote.registry_moved"])
def test_a_promotion_killed_midway_completes_on_resume(model, registry, live_data, tmp_path,
                                                       mlflow_server, failpoint):  # noqa: F811
    """Killed after deciding, or after the registry moved but before traffic did: the state
    says `promoting`, `abort` is refused, and `resume` ends with registry and traffic both on
    the candidate."""
    common = ["--tracking-uri", mlflow_server, "--state-dir", str(tmp_path)]
    with _plane(model, registry) as plane, _client(plane, live_data, rate=50.0) as client:
        r = _cli("rollout", "start", model, "--candidate-version", "2", "--router", plane.url,
                 *common, *FAST, env={"MLEOPS_FAILPOINTS": failpoint})
        assert r.returncode == 137, r.stdout + r.stderr
        assert _routes(plane.url)["champion"]["version"] == "1"
        moved = registry.champion(model)[0]
        assert moved == ("2" if failpoint == "promote.registry_moved" else "1")
        r = _cli("rollout", "abort", model, *common)
        assert r.returncode == 2 and "too late to abort" in r.stderr, r.stdout + r.stderr
        r = _cli("rollout", "resume", model, *common, "--interval", "0.2", "--timeout", "60")
        assert r.returncode == 0, r.stdout + r.stderr
        assert _routes(plane.url)["champion"]["version"] == "2"
        time.sleep(0.5)
    assert client.failed == 0
    assert registry.champion(model)[0] == "2"
