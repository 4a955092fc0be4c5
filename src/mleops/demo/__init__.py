"""``make demo``: the platform end to end on one machine, on embedded defaults.

Telemetry (request latencies, heavy right tail, censored at a client timeout) -> the real
training pipeline (KFP v2 components, kfp local runner) against an embedded MLflow store ->
the champion served by real OIP v2 model servers (KServe's ModelServer) behind the local
router -> a challenger
canaried on live traffic and promoted -> a candidate trained on a lossy collector's data that
passes its own gate but loses likelihood live, rolled back automatically -> a latency
regression caught by the drift monitor -> a fleet of 200 endpoints' models registered as one
version, a candidate worse on 6 of them merged key by key. Plots and an HTML report land in the demo directory
(``.mleops/demo``, or ``$MLEOPS_DEMO_DIR``); every process the demo starts is stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time

from mleops.demo.progress import Progress
from mleops.demo.telemetry import FAMILY, MU, SIGMA, TIMEOUT, latencies, write

NAME = "request-latency"


def _pipeline(req, root: str, label: str) -> dict:
    from mleops.pipeline.runner import run_pipeline

    with Progress(f"pipeline: {label}"), open(os.path.join(root, "pipeline.log"), "a") as log, \
            contextlib.redirect_stdout(log):
        return run_pipeline(req, pipeline_root=os.path.join(root, "kfp"))


def _say(title: str, lines: list[str], story: list[dict]) -> None:
    print(f"\n{title}")
    for line in lines:
        print(f"    {line}")
    sys.stdout.flush()
    story.append({"title": title, "lines": lines})


def _gate_lines(label: str, res: dict) -> list[str]:
    from mleops.gate import outcome_of

    g = res["gate"]
    head = (f"{label}: gate {outcome_of(g).upper()}"
            + (f" -> registered v{res['registered_version']}" if res["registered_version"]
               else " -> nothing registered"))
    return [head] + [f"  {r}" for r in g["reasons"]]


def _rollout_lines(out: dict) -> list[str]:
    s = out["state"]
    v = s.verdict
    return [f"{s.phase.upper().replace('_', ' ')}. {s.reason.split(': ', 1)[-1]}",
            f"canary rows {v.get('rows_canary')}, champion rows {v.get('rows_champion')}; "
            f"client requests {out['sent']}, failed {out['failed']}"]


def main() -> int:
    import logging

    from mleops.demo.live import LocalDataPlane, run_rollout
    from mleops.demo.report import write_report
    from mleops.monitor import CusumConfig, monitor_rows, registry_baseline
    from mleops.pipeline.runner import RunRequest
    from mleops.plots import pit_values, plot_canary, plot_loglik_trend, plot_pit
    from mleops.registry import Registry

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # keep the narration readable
    t_start = time.monotonic()
    root = os.path.abspath(os.environ.get("MLEOPS_DEMO_DIR", os.path.join(".mleops", "demo")))
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "plots"))
    tracking = f"sqlite:///{os.path.join(root, 'mlflow.db')}"
    story: list[dict] = []
    print(f"mleops demo: MLE models from telemetry to production, on this machine\n"
          f"  directory {root}\n  MLflow    {tracking}")

    # 1. telemetry ---------------------------------------------------------------------------
    path = lambda f: os.path.join(root, f)  # noqa: E731
    data = {k: write(path(f"{k}.csv"), *latencies(n, seed, **kw)) for k, n, seed, kw in (
        ("week1", 3000, 1, {}), ("golden", 5000, 2, {}),
        ("lossy", 6000, 3, {"drop_slowest": 0.1}), ("week2", 20000, 4, {}),
        ("lossy2", 8000, 5, {"drop_slowest": 0.1}))}
    rows = {k: latencies(n, seed, slowdown=slow)  # (x, event): replayed, and scored below
            for k, n, seed, slow in (("good", 6000, 6, 1.0), ("slow", 3000, 7, 1.6))}
    live = {k: write(path(f"live_{k}.csv"), *xe, names=("x", "event")) for k, xe in rows.items()}
    _say("[1/7] Telemetry", [
        f"request latencies ~ lognormal(mu={MU}, sigma={SIGMA}) seconds, censored at the "
        f"{TIMEOUT:g} s client timeout",
        "week1 3,000 rows; a lossy collector 6,000 (slowest 10% dropped); week2 20,000; a "
        "golden validation set 5,000; live traffic 6,000"], story)

    # 2. training pipeline -------------------------------------------------------------------
    base = dict(family=FAMILY, model_name=NAME, column="latency_s", censor_column="completed",
                tracking_uri=tracking)
    lines = []
    for label, extra in (("week1", {"validation_data_uri": data["golden"]}),
                         ("lossy collector", {"validation_data_uri": data["golden"]}),
                         ("week2", {"validation_data_uri": data["golden"]})):
        key = {"week1": "week1", "lossy collector": "lossy", "week2": "week2"}[label]
        lines += _gate_lines(label, _pipeline(RunRequest(data_uri=data[key], **base, **extra),
                                              root, label))
    _say("[2/7] Training pipeline (Kubeflow Pipelines v2 components, local runner), "
         "gated on the golden set", lines, story)

    reg = Registry(tracking)
    plots = {}
    state_dir = path("rollouts")
    with LocalDataPlane(NAME, tracking_uri=tracking, stage_root=path("models"),
                        log_dir=root) as plane:
        champion = reg.champion(NAME)[0]
        _say("[3/7] Serving", [f"champion v{champion} on KServe's ModelServer (Open Inference "
                               f"Protocol v2) behind the router at {plane.url}"
                               f"{plane.wire.predict_path} (127.0.0.1 only)"], story)

        # 3. canary of the challenger: promoted ------------------------------------------
        challenger = [v["version"] for v in reg.list_versions(NAME)
                      if "challenger" in v["aliases"]][0]
        # min_drop 0.1: an equal canary is shown "not worse by 0.1 nats/row" in ~1/4 of the
        # rows 0.05 needs (~9,500 canary rows at 10/25/50%: minutes on a loaded 2-core box)
        good = run_rollout(plane, reg, NAME, challenger, mode="split", min_drop=0.1,
                           live_path=live["good"], state_dir=state_dir)
        plots["Canary rollout of the challenger (split traffic): promoted"] = plot_canary(
            good["series"]["champion"], good["series"]["canary"], path("plots/canary_good.png"),
            events=good["series"]["events"], title=f"canary v{challenger} (split)")
        _say(f"[4/7] Canary v{challenger} on live traffic, steps 10/25/50/100%",
             _rollout_lines(good), story)

        # 4. a candidate that passes its own gate but is worse live: rolled back ----------
        res = _pipeline(RunRequest(data_uri=data["lossy2"], **base), root, "lossy, own split")
        bad_version = res["registered_version"]
        lines = _gate_lines("lossy collector, gated on its own held-out split", res)
        if bad_version:
            bad = run_rollout(plane, reg, NAME, str(bad_version), mode="shadow",
                              live_path=live["good"], state_dir=state_dir)
            lines += _rollout_lines(bad)
            plots["Shadow rollout of the lossy candidate: rolled back"] = plot_canary(
                bad["series"]["champion"], bad["series"]["canary"],
                path("plots/canary_bad.png"), events=bad["series"]["events"],
                title=f"canary v{bad_version} (shadow, paired rows)")
        _say("[5/7] A candidate trained on a lossy collector's data", lines, story)

    # 5. drift ---------------------------------------------------------------------------------
    import numpy as np

    version, art = reg.champion(NAME)
    baseline = registry_baseline(reg, NAME, version, art)
    (x_good, e_good), (x_slow, e_slow) = rows["good"], rows["slow"]
    ll = art.loglik_rows(np.concatenate([x_good[:3000], x_slow]),
                         event=np.concatenate([e_good[:3000], e_slow]))
    config = CusumConfig(false_alarm=0.01, horizon=len(ll) // 100, window=100)
    report = monitor_rows(ll, baseline, config)
    plots["Drift monitor: live log-likelihood of the champion"] = plot_loglik_trend(
        report, path("plots/drift.png"), title=f"{NAME} v{version}: live log-likelihood")
    pit = pit_values(art, x_good, event=e_good)
    plots["Calibration of the champion on live traffic (PIT)"] = plot_pit(
        pit, path("plots/pit.png"), title=f"{NAME} v{version} on live traffic")
    _say("[6/7] Drift monitor (CUSUM on per-row log-likelihood, 1% false-alarm rate)", [
        "3,000 normal rows, then latencies 1.6x slower after an infrastructure change "
        "(row 3,000)", report.reason,
        f"same check from the CLI: mleops monitor {NAME} --tracking-uri {tracking} "
        f"--data {live['slow']} --column x --censor-column event  (exit code 4: drift)"],
        story)

    # 6. a fleet: 200 endpoints as one version, gated key by key -----------------------------
    from mleops.demo.fleet import fleet_act

    _say("[7/7] A fleet: 200 endpoints' models as one version, gated key by key (e-BH, FDR 5%)",
         fleet_act(root, tracking, lambda req, label: _pipeline(req, root, label)), story)

    html = write_report(path("report.html"), steps=story, versions=reg.list_versions(NAME),
                        images=plots)
    print("\nregistry now: " + "; ".join(
        f"v{v['version']} {','.join(v['aliases']) or '-'}"
        + (f" ({v['tags']['mleops.rollout']})" if 'mleops.rollout' in v["tags"] else "")
        for v in reg.list_versions(NAME)))
    print(f"report: {html}\nplots:  {path('plots')}\n"
          f"done in {time.monotonic() - t_start:.0f} s; every process it started is stopped")
    return 0


__all__ = ["main"]
