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
import shlex
import sys

import click

from mleops.cli import exits


def _retrain_with(pipeline_args: str):
    """A retrain hook: ``mleops pipeline run`` with the champion's defaults plus
    ``--pipeline-args`` (parsed by the same option definitions)."""
    from mleops.cli.options import parse_pipeline_run, split_pipeline_run
    from mleops.errors import DataError
    from mleops.pipeline.runner import RunRequest, run_pipeline

    extra = shlex.split(pipeline_args)

    def retrain(options: dict) -> dict:
        args = [a for kv in options.items() for a in kv] + extra
        try:
            p = parse_pipeline_run(args)
        except (click.UsageError, ValueError) as e:
            msg = e.format_message() if isinstance(e, click.UsageError) else str(e)
            raise DataError(f"--on-drift retrain: {msg}") from None
        fields, how = split_pipeline_run(p)
        with contextlib.redirect_stdout(sys.stderr):  # task logs never mix with --json output
            return run_pipeline(RunRequest(**fields), **how)

    return retrain


def _print_fleet(out: dict) -> None:
    click.echo(f"fleet {out['model']} version {out['version']}: {out['keys']} keys, "
               f"{out['keys_with_windows']} with windows, {out['rows']} rows "
               f"({out['unknown_key_rows']} of unknown keys); baseline {out['baseline']}")
    alarmed = out["alarmed_keys"]
    click.echo((f"DRIFT  {len(alarmed)} key(s) drifted (BH at FDR {out['fdr']}): "
                + ", ".join(alarmed[:20]) + (" ..." if len(alarmed) > 20 else ""))
               if alarmed else f"ok  no key drifted (BH at FDR {out['fdr']})")
    if "retrain" in out:
        r = out["retrain"]
        click.echo(f"retrain: {len(r['keys_retrained'])} key(s) refitted, registered version "
                   f"{r['registered_version']} (the challenger)")


def _print(out: dict) -> None:
    from mleops.gate import outcome_of

    if out.get("fleet"):
        return _print_fleet(out)
    b = out["baseline"]
    click.echo(f"model {out['model']} version {out['version']}: baseline mean {b['mean']:.5g} "
               f"sd {b['sd']:.4g} ({b['source']})")
    if out["windows"]:
        w = out["windows"][-1]
        click.echo(f"{len(out['windows'])} windows, {out['rows']} rows; last window mean "
                   f"{w['mean']:.5g} (z = {w['z']:.2f})")
    click.echo(("DRIFT  " if out["alarm"] else "ok  ") + out["reason"])
    for key in ("plot", "pit_plot"):
        if out.get(key):
            click.echo(f"{key.replace('_', ' ')}: {out[key]}")
    if "retrain" in out:
        r = out["retrain"]
        click.echo("retrain: " + (f"submitted KFP run {r['kfp_run_id']}" if r.get("submitted")
                                  else f"gate {outcome_of(r['gate']).upper()},"
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
              help="retrain: run the training pipeline when drift is detected (a fleet: "
                   "refit the drifted keys only, into one new version).")
@click.option("--fdr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="A fleet: false discovery rate of the keys that alarm.")
@click.option("--pipeline-args", default="",
              help="Extra 'mleops pipeline run' options for the retrain, one quoted string.")
def monitor_cmd(name, tracking_uri, alias, model_dir, data_path, column, censor_column,
                baseline_data, prometheus, registered_version, interval, duration, window,
                min_rows, false_alarm, horizon, state_path, plot, pit_plot, as_json, on_drift,
                fdr, pipeline_args) -> None:
    """Detect drift of NAME's live log-likelihood; exit 0 no drift, 4 drift."""
    from mleops.monitor import MonitorRequest, run_monitor

    req = MonitorRequest(
        name, tracking_uri=tracking_uri, alias=alias, model_dir=model_dir, data_path=data_path,
        column=column, censor_column=censor_column, baseline_data=baseline_data,
        prometheus=prometheus, registered_version=registered_version, interval=interval,
        duration=duration, window=window, min_rows=min_rows, false_alarm=false_alarm,
        horizon=horizon, state_path=state_path, plot=plot, pit_plot=pit_plot, fdr=fdr)
    out = run_monitor(req, retrain=_retrain_with(pipeline_args) if on_drift == "retrain"
                      else None)
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        _print(out)
    sys.exit(exits.for_drift(out["alarm"]))
