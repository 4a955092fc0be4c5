"""What ``mleops monitor`` does, as library functions: load the model, score or poll, resume
the detector, plot, and (handed in by the caller) retrain on drift.

The command line only parses options into a :class:`MonitorRequest`, calls
:func:`run_monitor`, prints and exits; a cron job or a test can call the same function.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mleops.artifact import ModelArtifact
from mleops.columns import ColumnSpec, select_columns
from mleops.errors import DataError
from mleops.io import read_table
from mleops.monitor.baseline import Baseline, model_baseline, registry_baseline
from mleops.monitor.cusum import CusumConfig, CusumDetector
from mleops.monitor.live import watch_prometheus


@dataclass
class MonitorRequest:
    """One monitoring run: the model, where live rows come from, and the detector settings."""

    name: str
    tracking_uri: str = ""
    alias: str = "champion"
    model_dir: str = ""
    data_path: str = ""
    column: str = ""
    censor_column: str = ""
    baseline_data: str = ""
    prometheus: str = ""
    registered_version: str = ""
    interval: float = 60.0
    duration: float = 3600.0
    window: int = 100
    min_rows: int = 30
    false_alarm: float = 0.01
    horizon: int = 0  # 0: the windows in data_path, or duration/interval
    state_path: str = ""
    plot: str = ""
    pit_plot: str = ""
    fdr: float = 0.05  # a fleet: false discovery rate of the keys that alarm

    def validate(self) -> None:
        if bool(self.data_path) == bool(self.prometheus):
            raise DataError("give exactly one of --data FILE and --prometheus URL")
        if self.pit_plot and not self.data_path:
            raise DataError("--pit-plot needs --data")
        if self.prometheus and (self.interval <= 0 or self.duration < self.interval):
            raise DataError("need 0 < --interval <= --duration")


def load_model(name: str, model_dir: str, tracking_uri: str, alias: str
               ) -> tuple[str, ModelArtifact, object | None]:
    """(version, artifact, registry or None); a local model's version is serving.json's."""
    if model_dir:
        from mleops.serving.service import SERVING_INFO

        info = os.path.join(model_dir, SERVING_INFO)
        version = "local"
        if os.path.exists(info):
            with open(info) as f:
                version = str(json.load(f).get("version", "local"))
        return version, ModelArtifact.load(model_dir), None
    from mleops.registry import Registry

    reg = Registry(tracking_uri or None)
    found = reg.load_alias(name, alias)
    if found is None:
        raise DataError(f"model {name!r} has no {alias!r} version in {reg.uri} (or use "
                        f"--model-dir)")
    return found[0], found[1], reg


def score_file(art: ModelArtifact, path: str, column: str, censor_column: str
               ) -> tuple[dict, np.ndarray]:
    """Rows of ``path`` as the artifact evaluates them, and their log-likelihoods."""
    covariates = [f for f in art.features if f != "const"]
    c = select_columns(read_table(path), ColumnSpec(column, censor_column, "", covariates))
    rows = art.modeled_rows(c.x, event=c.event, X=c.X)
    return rows, art.loglik_rows(rows["x"], event=rows["event"], X=rows["X"])


def choose_baseline(art: ModelArtifact, reg, req: MonitorRequest, version: str) -> Baseline:
    """Held-out rows the user names, else what the training run logged, else model-implied."""
    if req.baseline_data:
        _, ll = score_file(art, req.baseline_data, req.column, req.censor_column)
        return Baseline.from_loglik(ll, source=f"held-out rows in {req.baseline_data}")
    stored = registry_baseline(reg, req.name, version, art) if reg is not None else None
    if stored is None and req.censor_column:
        raise DataError("censored rows need a held-out baseline with the same censoring: "
                        "give --baseline-data")
    return stored or model_baseline(art)


def resume_detector(state_path: str, model_key: dict, make: Callable[[], CusumDetector]
                    ) -> CusumDetector:
    """Resume from ``state_path`` when it belongs to the same model version, else start anew."""
    if state_path and os.path.exists(state_path):
        with open(state_path) as f:
            saved = json.load(f)
        if saved.get("model") == model_key:
            return CusumDetector.from_dict(saved["detector"])
    return make()


def retrain_request(name: str, art: ModelArtifact, req: MonitorRequest) -> dict:
    """``mleops pipeline run`` options for a retrain on the drifted rows, defaults taken from
    the champion (family, columns); what a retrain hook receives."""
    fam = art.family
    out = {"--family": fam["name"], "--model-name": name, "--data": req.data_path,
           "--column": req.column, "--censor-column": req.censor_column,
           "--tracking-uri": req.tracking_uri, "--threshold": fam.get("threshold"),
           "--components": fam.get("k"),
           "--covariates": ",".join(f for f in art.features if f != "const")}
    return {k: str(v) for k, v in out.items() if v}


def run_monitor(req: MonitorRequest, *,
                retrain: Callable[[dict], dict] | None = None) -> dict:
    """Score or poll, update the (resumed) detector, save it, plot; on drift call ``retrain``
    with :func:`retrain_request`'s options. The report as a dict (``alarm`` says drift)."""
    req.validate()
    from mleops.monitor.fleet_check import fleet_champion, run_fleet_monitor

    if (fleet := fleet_champion(req)) is not None:  # per-key drift, FDR across keys
        return run_fleet_monitor(req, fleet[1], fleet[0], fleet[2], retrain=retrain is not None)
    version, art, reg = load_model(req.name, req.model_dir, req.tracking_uri, req.alias)
    rows = ll = None
    if req.data_path:
        rows, ll = score_file(art, req.data_path, req.column, req.censor_column)
        if ll.size < min(req.window, req.min_rows):
            raise DataError(f"{req.data_path}: {ll.size} rows, fewer than one window "
                            f"({min(req.window, req.min_rows)} rows)")
    windows = (math.ceil(ll.size / req.window) if req.data_path
               else max(1, int(req.duration // req.interval)))

    def make() -> CusumDetector:
        return CusumDetector(choose_baseline(art, reg, req, version), CusumConfig(
            false_alarm=req.false_alarm, horizon=req.horizon or windows, window=req.window,
            min_rows=req.min_rows))

    model_key = {"name": req.name, "version": version}
    det = resume_detector(req.state_path, model_key, make)
    if req.data_path:
        det.update_rows(ll)
        if not req.state_path:
            det.finish()  # a one-off file: score its last partial window too
        report = det.report()
    else:
        label = req.registered_version or version
        if label == "local":
            raise DataError("--prometheus with --model-dir needs --registered-version "
                            "(or a serving.json next to model.json)")
        report = watch_prometheus(det, req.prometheus, req.name, label, interval=req.interval,
                                  duration=req.duration)
    if req.state_path:
        os.makedirs(os.path.dirname(os.path.abspath(req.state_path)), exist_ok=True)
        with open(req.state_path, "w") as f:
            json.dump({"model": model_key, "detector": det.to_dict()}, f)
    out: dict = {"model": req.name, "version": version, **report.to_dict()}
    if req.plot and report.windows:
        from mleops.plots import plot_loglik_trend

        out["plot"] = plot_loglik_trend(report, req.plot, title=f"{req.name} v{version}")
    if req.pit_plot:
        from mleops.plots import pit_values, plot_pit

        out["pit_plot"] = plot_pit(pit_values(art, rows["x"], event=rows["event"],
                                              X=rows["X"]), req.pit_plot,
                                   title=f"{req.name} PIT")
    if report.alarm and retrain is not None:
        out["retrain"] = retrain(retrain_request(req.name, art, req))
    return out


__all__ = ["MonitorRequest", "choose_baseline", "load_model", "resume_detector",
           "retrain_request", "run_monitor", "score_file"]
