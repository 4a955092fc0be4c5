"""The registry under concurrency, on the stack infra/k8s deploys: PostgreSQL-backed MLflow
with S3 artifacts (a real S3 API on 127.0.0.1). MLflow has no compare-and-set; the model lock
(mleops.registry.lock) serialises writers, and these tests hold it to its claims."""

import json
import os
import threading
import uuid

import numpy as np
import pytest

import mleops
from mleops.artifact import ModelArtifact
from mleops.registry.registry import ALIAS_TAG, HISTORY_TAG, ChampionMoved, Registry

# one PostgreSQL + S3 + MLflow stack per test session: both modules on the same xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow_production")]
REPS = int(os.environ.get("MLEOPS_TEST_REPS", "5"))  # 20 measured for the closing note
LINEAGE = {"mleops.data_hash": "h"}


@pytest.fixture(scope="module")
def stack(mlflow_production):  # noqa: F811
    uri, control = mlflow_production
    for k, v in control["env"].items():  # the client writes artifacts to S3 itself
        pytest.MonkeyPatch().setenv(k, v)
    reg = Registry(uri, retries=3, backoff=0.2)
    runs = []
    for seed in range(4):
        art = ModelArtifact.from_fit(mleops.fit(np.random.default_rng(seed).gamma(2, 1.5, 300),
                                                "gamma"))
        runs.append(reg.log_training_run(experiment="concurrency", params={"seed": seed},
                                         metrics={}, artifact=art))
    return uri, runs, control


def _together(fns):
    """Run the callables at the same instant, one thread each; their results or exceptions."""
    barrier, out = threading.Barrier(len(fns)), [None] * len(fns)

    def go(i, fn):
        barrier.wait()
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001 - the test inspects what each got
            out[i] = e
    threads = [threading.Thread(target=go, args=(i, f)) for i, f in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


def _state(uri, name):
    rm = Registry(uri).client.get_registered_model(name)
    aliases = {k: str(v) for k, v in (rm.aliases or {}).items()}
    return aliases, rm.tags


def test_concurrent_first_registrations_make_one_champion(stack):
    """4 pipeline runs gated as "first model" at once, 20 times: one champion, the others
    refused (the champion they were gated against is no longer the current one: the pipeline
    re-gates them against it) instead of a challenger never compared with a champion."""
    uri, runs, _ = stack
    for _ in range(REPS):
        name = f"c-{uuid.uuid4().hex[:8]}"
        got = _together([lambda r=r, n=name: Registry(uri).register(
            n, r, tags=LINEAGE, expected_champion="") for r in runs])
        versions = [g for g in got if isinstance(g, str)]
        refused = [g for g in got if isinstance(g, ChampionMoved)]
        assert len(versions) == 1 and len(refused) == 3, got
        assert all(e.expected == "" and e.now == versions[0] for e in refused), refused
        assert all("changed since this candidate was gated" in str(e) for e in refused), refused
        aliases, tags = _state(uri, name)
        assert aliases == {"champion": versions[0]}
        assert tags[ALIAS_TAG + "champion"] == versions[0] and "mleops.lock" not in tags


def test_concurrent_registrations_and_promotions_lose_nothing(stack):
    """Per repetition: a champion, 4 challengers registered at once against it, then 4
    promotes of different versions at once: one champion at the end, every promotion on the
    history in order (none lost, none reported done and not), aliases and tags agree."""
    uri, runs, _ = stack
    for _ in range(REPS):
        name = f"p-{uuid.uuid4().hex[:8]}"
        first = Registry(uri).register(name, runs[0], tags=LINEAGE, expected_champion="")
        got = _together([lambda r=r, n=name, f=first: Registry(uri).register(
            n, r, tags=LINEAGE, expected_champion=f) for r in runs])
        assert all(isinstance(g, str) for g in got), got  # the champion never changed
        results = _together([lambda v=v, n=name: Registry(uri).promote(n, v) for v in got])
        assert all(isinstance(r, dict) for r in results), results
        aliases, tags = _state(uri, name)
        history = json.loads(tags[HISTORY_TAG])
        # serialised: each promotion replaced the champion the previous one made
        chain = sorted(results, key=lambda r: history.index(r["previous"]))
        assert [r["previous"] for r in chain] == history == [first] + [r["version"] for r in
                                                                      chain[:-1]]
        assert aliases["champion"] == chain[-1]["version"] == tags[ALIAS_TAG + "champion"]
        assert "challenger" not in aliases or aliases["challenger"] not in history
        assert "mleops.lock" not in tags and "mleops.promotion_pending" not in tags


def test_a_postgres_restart_mid_run_loses_nothing(stack):
    """PostgreSQL restarted between writes: calls fail (after retries) or succeed, and the
    registry is consistent afterwards; the next promote completes."""
    uri, runs, control = stack
    name = f"r-{uuid.uuid4().hex[:8]}"
    reg = Registry(uri, retries=6, backoff=0.5)
    first = reg.register(name, runs[0], tags=LINEAGE, expected_champion="")
    second = reg.register(name, runs[1], tags=LINEAGE, expected_champion=first)
    control["restart_postgres"]()
    moved = reg.promote(name, second)
    aliases, tags = _state(uri, name)
    assert moved["previous"] == first and aliases == {"champion": second}
    assert json.loads(tags[HISTORY_TAG]) == [first]


def test_four_concurrent_pipeline_runs_register_one_first_model(stack, tmp_path):
    """The real CLI, 4 pipeline runs (kfp local runner; ``MLEOPS_TEST_PIPELINES`` of them,
    ``MLEOPS_TEST_PIPELINE_REPS`` times: 8 measured for the closing note) for one new model
    at once, all gated as "first model": one registers the champion; the others are re-gated
    against it at registration and registered as challenger or rejected by it (exit 0 or 3),
    both decisions recorded, none exits 1."""
    uri, _, control = stack
    rng = np.random.default_rng(7)
    valid = tmp_path / "valid.csv"
    np.savetxt(valid, rng.gamma(2.0, 1.5, 2000), header="latency", comments="")
    for _ in range(int(os.environ.get("MLEOPS_TEST_PIPELINE_REPS", "1"))):
        _concurrent_pipelines(uri, control, rng, valid, tmp_path,
                              int(os.environ.get("MLEOPS_TEST_PIPELINES", "4")))


def _concurrent_pipelines(uri, control, rng, valid, tmp_path, n):
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    exe = os.path.join(os.path.dirname(sys.executable), "mleops")
    name = f"pipe-{uuid.uuid4().hex[:8]}"

    def one(i):
        d = tmp_path / name / f"run{i}"
        d.mkdir(parents=True)
        np.savetxt(d / "train.csv", rng.gamma(2.0, 1.5, 2000 + i), header="latency",
                   comments="")
        return subprocess.run(
            [exe, "pipeline", "run", "--data", str(d / "train.csv"), "--family", "gamma",
             "--model-name", name, "--validation-data", str(valid), "--tracking-uri", uri,
             "--pipeline-root", str(d / "root"), "--json"],
            capture_output=True, text=True, timeout=900, cwd=d,
            env={**os.environ, **control["env"], "MLEOPS_JAX_CACHE": "off"})

    with ThreadPoolExecutor(n) as pool:
        outs = list(pool.map(one, range(n)))
    assert all(o.returncode in (0, 3) for o in outs), [(o.returncode, o.stderr[-800:])
                                                        for o in outs]
    results = [json.loads(o.stdout) for o in outs]
    aliases, _ = _state(uri, name)
    first = [r for r in results if len(r["gate_decisions"]) == 1]
    regated = [r for r in results if len(r["gate_decisions"]) == 2]
    assert len(first) == 1 and len(regated) == n - 1, [r["gate_decisions"] for r in results]
    assert aliases["champion"] == first[0]["registered_version"]
    versions = {v["version"]: v for v in Registry(uri).list_versions(name)}
    for r, o in zip(results, outs):
        assert (r["registered_version"] is not None) == (o.returncode == 0), r
    for r in regated:
        before, after = r["gate_decisions"]
        assert before["champion_version"] == "" and after["champion_version"] == \
            aliases["champion"] and r["gate"] == after
        if r["registered_version"]:
            tags = versions[r["registered_version"]]["tags"]
            assert [d["champion_version"] for d in json.loads(tags["mleops.gate_decisions"])] \
                == ["", aliases["champion"]]
    assert len(versions) == sum(r["registered_version"] is not None for r in results)


def test_eight_concurrent_candidates_are_regated_and_none_is_lost(stack):
    """8 candidates gated as "first model" at once (REPS times, on PostgreSQL-backed MLflow):
    one champion; each other is re-gated against it under compare-and-register and either
    registered (its version recording both decisions) or rejected by the re-gate; every
    registration reported is a version, and every version was reported."""
    from dataclasses import asdict

    from mleops.gate import GateConfig, calibration, heldout_loglik
    from mleops.pipeline.dataset import Table
    from mleops.pipeline.regate import DECISIONS_TAG, regate, register_regated

    uri, _, _ = stack
    rng = np.random.default_rng(11)
    held = rng.gamma(2.0, 1.5, 1000)
    reg = Registry(uri)
    cands = []
    for i in range(8):
        art = ModelArtifact.from_fit(mleops.fit(rng.gamma(2.0, 1.5, 400), "gamma"))
        run = reg.log_training_run(experiment="concurrency8", params={"i": i}, metrics={},
                                   artifact=art)
        cands.append((run, art, heldout_loglik(art, held), calibration(art, held)))
    decision = {"champion_version": "", "passed": True, "outcome": "passed",
                "config": asdict(GateConfig(ks_max=0.2))}

    def one(name, run, art, ll, calib):
        r = Registry(uri)
        return register_regated(r, name, run, LINEAGE, decision, lambda now: regate(
            decision, ll, calib, held=Table(held), art=art, registry=r, model_name=name,
            champion_version=now))

    for _ in range(max(1, REPS // 2)):
        name = f"e-{uuid.uuid4().hex[:8]}"
        got = _together([lambda c=c, n=name: one(n, *c) for c in cands])
        assert all(isinstance(g, tuple) for g in got), got
        aliases, tags = _state(uri, name)
        firsts = [g for g in got if len(g[1]) == 1]
        assert len(firsts) == 1 and firsts[0][0] == aliases["champion"], got
        versions = {v["version"]: v for v in Registry(uri).list_versions(name)}
        assert set(versions) == {g[0] for g in got if g[0] is not None}, (versions, got)
        for version, decisions in got:
            if len(decisions) == 2:
                assert decisions[1]["champion_version"] == aliases["champion"]
                assert (version is not None) == decisions[1]["passed"]
            if version is not None:
                recorded = json.loads(versions[version]["tags"][DECISIONS_TAG])
                assert [d["champion_version"] for d in recorded] == \
                    [d["champion_version"] for d in decisions]
        assert "mleops.lock" not in tags
