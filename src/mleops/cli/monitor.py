"""``mleops monitor``: has the live data drifted away from the champion?

Scores rows (``--data``, in arrival order) or polls the model server's cumulative totals in
Prometheus (``--prometheus``) and runs the CUSUM of :mod:`mleops.monitor` against the
champion's held-out baseline, with a stated false-alarm probability (``--false-alarm`` over
``--horizon`` windows). Exit codes for cron/CI: 0 no drift, 4 drift detected (also when
``--on-drift retrain`` then ran the pipeline), 2 bad input, 1 any other failure (registry or
Prometheus unreachable, a pipeline task failed).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sys

import click

EXIT_DRIFT = 4


def _load_model(name: str, model_dir: str, tracking_uri: str, alias: str):
    """(version, artifact, registry or None); a local model's version is serving.json's."""
    from ..artifact import ModelArtifact
    from ..errors import DataError

    if model_dir:
        from ..serving.service import SERVING_INFO

        info = os.path.join(model_dir, SERVING_INFO)
        version = "local"
        if os.path.exists(info):
            with open(info) as f:
                version = str(json.load(f).get("version", "local"))
        return version, ModelArtifact.load(model_dir), None
    from ..registry import Registry

    reg = Registry(tracking_uri or None)
    found = reg.load_alias(name, alias)
    if found is None:
        raise DataError(f"model {name!r} has no {alias!r} version in {reg.uri} (or use "
                        f"--model-dir)")
    return found[0], found[1], reg


def _score(art, path: str, column: str, censor_column: str) -> tuple[dict, object]:
    """Rows of ``path`` as the artifact evaluates them, and their log-likelihoods."""
    from ..fit.request import ColumnSpec, select_columns
    from ..io import read_table
    from ..pipeline.dataset import Table
    from ..pipeline.steps import _rows

    covariates = [f for f in art.features if f != "const"]
    c = select_columns(read_table(path), ColumnSpec(column, censor_column, "", covariates))
    rows = _rows(art, Table(c.x, c.event, None, c.X))
    return rows, art.loglik_rows(rows["x"], event=rows["event"], X=rows["X"])


def _baseline(art, reg, name, version, baseline_data, column, censor_column):
    from ..monitor import Baseline, model_baseline, registry_baseline

    if baseline_data:
        _, ll = _score(art, baseline_data, column, censor_column)
        return Baseline.from_loglik(ll, source=f"held-out rows in {baseline_data}")
    stored = registry_baseline(reg, name, version, art) if reg is not None else None
    if stored is None and censor_column:
        from ..errors import DataError

        raise DataError("censored rows need a held-out baseline with the same censoring: "
                        "give --baseline-data")
    return stored or model_baseline(art)


def _detector(state_path, model_key, make):
    """Resume from ``--state`` when it belongs to the same model version, else start anew."""
    from ..monitor import CusumDetector

    if state_path and os.path.exists(state_path):
        with open(state_path) as f:
            saved = json.load(f)
        if saved.get("model") == model_key:
            return CusumDetector.from_dict(saved["detector"])
    return make()


def _retrain(name, art, data_path, column, censor_column, tracking_uri, pipeline_args) -> dict:
    """Run the training pipeline exactly as ``mleops pipeline run`` would, defaults filled
    from the champion (family, columns) and the drifted rows as training data."""
    from ..errors import DataError
    from ..pipeline.runner import RunRequest, run_pipeline
    from .pipeline import run_cmd

    fam = art.family
    args = ["--family", fam["name"], "--model-name", name]
    for opt, value in (("--data", data_path), ("--column", column),
                       ("--censor-column", censor_column), ("--tracking-uri", tracking_uri),
                       ("--threshold", fam.get("threshold")), ("--components", fam.get("k")),
                       ("--covariates", ",".join(f for f in art.features if f != "const"))):
        if value:
            args += [opt, str(value)]
    try:
        ctx = run_cmd.make_context("pipeline run", args + shlex.split(pipeline_args))
    except (click.UsageError, ValueError) as e:
        msg = e.format_message() if isinstance(e, click.UsageError) else str(e)
        raise DataError(f"--on-drift retrain: {msg}") from None
    p = dict(ctx.params)
    host, root, no_cache = p.pop("host"), p.pop("pipeline_root"), p.pop("no_cache")
    p.pop("as_json")
    with contextlib.redirect_stdout(sys.stderr):  # task logs never mix with --json output
        return run_pipeline(RunRequest(**p), host=host, pipeline_root=root,
                            enable_caching=not no_cache)


def _print(report, model: str, version: str, out: dict) -> None:
    b = report.baseline
    click.echo(f"model {model} version {version}: baseline mean {b['mean']:.5g} sd {b['sd']:.4g}"
               f" ({b['source']})")
    if report.windows:
        w = report.windows[-1]
        click.echo(f"{len(report.windows)} windows, {report.rows} rows; last window mean "
                   f"{w['mean']:.5g} (z = {w['z']:.2f})")
    click.echo(("DRIFT  " if report.alarm else "ok  ") + report.reason)
    for key in ("plot", "pit_plot"):
        if out.get(key):
            click.echo(f"{key.replace('_', ' ')}: {out[key]}")
    if "retrain" in out:
        r = out["retrain"]
        click.echo("retrain: " + (f"submitted KFP run {r['kfp_run_id']}" if r.get("submitted")
                                  else f"gate {'PASSED' if r['gate']['passed'] else 'REJECTED'},"
                                  f" registered version {r['registered_version']}"))


@click.command("monitor")
@click.argument("name")
@click.option("--tracking-uri", default="", help="MLflow tracking URI (default: ./mlruns.db).")
@click.option("--alias", default="champion", help="Registry alias of the model to watch.")
@click.option("--model-dir", default="", help="Local model.json directory instead of the registry.")
@click.option("--data", "data_path", default="", help="CSV/Parquet rows, in arrival order.")
@click.option("--column", default="", help="Response column (default: the only one).")
@click.option("--censor-column", default="", help="1 = event observed, 0 = right-censored.")
@click.option("--baseline-data", default="",
              help="Held-out rows to take the baseline from (default: the baseline the "
                   "version's training run logged, else model-implied).")
@click.option("--prometheus", default="", help="Prometheus base URL: poll the serving totals.")
@click.option("--registered-version", default="",
              help="registered_version label in Prometheus (default: the model's version).")
@click.option("--interval", type=float, default=60.0, help="Seconds between Prometheus polls.")
@click.option("--duration", type=float, default=3600.0, help="Seconds to watch Prometheus.")
@click.option("--window", type=click.IntRange(min=1), default=100, help="Rows per window (--data).")
@click.option("--min-rows", type=click.IntRange(min=1), default=30,
              help="Fewest rows a window needs; smaller Prometheus windows are merged.")
@click.option("--false-alarm", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.01,
              help="Probability of a false alarm over the horizon.")
@click.option("--horizon", type=click.IntRange(min=0), default=0,
              help="Windows the false-alarm probability covers (default: the windows in "
                   "--data, or duration/interval).")
@click.option("--state", "state_path", default="", help="JSON file to resume from and save to.")
@click.option("--plot", default="", help="PNG: windowed log-likelihood and CUSUM.")
@click.option("--pit-plot", default="", help="PNG: PIT histogram and coverage of --data.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--on-drift", type=click.Choice(["none", "retrain"]), default="none",
              help="retrain: run the training pipeline when drift is detected.")
@click.option("--pipeline-args", default="",
              help="Extra 'mleops pipeline run' options for the retrain, one quoted string.")
def monitor_cmd(name, tracking_uri, alias, model_dir, data_path, column, censor_column,
                baseline_data, prometheus, registered_version, interval, duration, window,
                min_rows, false_alarm, horizon, state_path, plot, pit_plot, as_json, on_drift,
                pipeline_args) -> None:
    """Detect drift of NAME's live log-likelihood; exit 0 no drift, 4 drift."""
    from ..errors import DataError
    from ..monitor import CusumConfig, CusumDetector, watch_prometheus

    if bool(data_path) == bool(prometheus):
        raise click.UsageError("give exactly one of --data FILE and --prometheus URL")
    if pit_plot and not data_path:
        raise click.UsageError("--pit-plot needs --data")
    if prometheus and (interval <= 0 or duration < interval):
        raise click.UsageError("need 0 < --interval <= --duration")
    version, art, reg = _load_model(name, model_dir, tracking_uri, alias)
    rows = ll = None
    if data_path:
        rows, ll = _score(art, data_path, column, censor_column)
        if ll.size < min(window, min_rows):
            raise DataError(f"{data_path}: {ll.size} rows, fewer than one window "
                            f"({min(window, min_rows)} rows)")
    windows = (math.ceil(ll.size / window) if data_path
               else max(1, int(duration // interval)))
    make = lambda: CusumDetector(  # noqa: E731
        _baseline(art, reg, name, version, baseline_data, column, censor_column),
        CusumConfig(false_alarm=false_alarm, horizon=horizon or windows, window=window,
                    min_rows=min_rows))
    model_key = {"name": name, "version": version}
    det = _detector(state_path, model_key, make)
    if data_path:
        det.update_rows(ll)
        if not state_path:
            det.finish()  # a one-off file: score its last partial window too
        report = det.report()
    else:
        label = registered_version or version
        if label == "local":
            raise DataError("--prometheus with --model-dir needs --registered-version "
                            "(or a serving.json next to model.json)")
        report = watch_prometheus(det, prometheus, name, label, interval=interval,
                                  duration=duration)
    if state_path:
        os.makedirs(os.path.dirname(os.path.abspath(state_path)), exist_ok=True)
        with open(state_path, "w") as f:
            json.dump({"model": model_key, "detector": det.to_dict()}, f)
    out: dict = {"model": name, "version": version, **report.to_dict()}
    if plot and report.windows:
        from ..plots import plot_loglik_trend

        out["plot"] = plot_loglik_trend(report, plot, title=f"{name} v{version}")
    if pit_plot:
        from ..plots import pit_values, plot_pit

        out["pit_plot"] = plot_pit(pit_values(art, rows["x"], event=rows["event"],
                                              X=rows["X"]), pit_plot, title=f"{name} PIT")
    if report.alarm and on_drift == "retrain":
        out["retrain"] = _retrain(name, art, data_path, column, censor_column, tracking_uri,
                                  pipeline_args)
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        _print(report, name, version, out)
    sys.exit(EXIT_DRIFT if report.alarm else 0)
