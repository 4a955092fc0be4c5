"""``mleops rollout fleet``: a fleet rollout decided per key, on a fleet canary server.

The server holds both tables (``python -m mleops.serving.oip_launch --model-dir CHAMPION
--canary-model-dir CANDIDATE --routing-file F``, or the same pod on a cluster with ``F`` on a
ConfigMap); this command reads its per-key counters and writes ``F``. Exit codes of
``start``/``resume``: 0 done (the merged version is the champion), 1 still running at
``--timeout``/``--ticks`` (resume it) or refused, 2 bad input.
"""

from __future__ import annotations

import json
import os

import click

from mleops.cli import exits


def _state_dir(f):
    return click.option("--state-dir", default=lambda: os.environ.get(
        "MLEOPS_ROLLOUT_DIR", os.path.join(".mleops", "rollouts")),
        show_default=".mleops/rollouts ($MLEOPS_ROLLOUT_DIR)")(f)


def _drive_options(f):
    for opt in reversed([
            click.option("--interval", type=click.FloatRange(min=0.0), default=10.0,
                         show_default=True, help="Seconds between ticks (reads)."),
            click.option("--timeout", type=click.FloatRange(min=0.0), default=None,
                         help="Stop driving after this long (resumable)."),
            click.option("--ticks", "max_now", type=click.IntRange(min=1), default=None,
                         help="Stop driving after this many ticks (resumable)."),
            click.option("--tracking-uri", default="", help="MLflow ($MLFLOW_TRACKING_URI)."),
            click.option("--json", "as_json", is_flag=True)]):
        f = opt(f)
    return f


def _echo(doc: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=1, default=str))
        return
    c = doc["counts"]
    click.echo(f"fleet rollout {doc['name']}: {doc['phase']}  candidate v{doc['candidate']} vs "
               f"champion v{doc['champion']}  tick {doc['ticks']}  weight {doc['weight']}%  "
               f"promoted {c['promote']}, rolled back {c['rollback']}, undecided "
               f"{c['undecided']}")
    if doc.get("result"):
        click.echo(f"  merged version {doc['result']['version']} is the champion")
    for row in doc.get("worst_keys", doc.get("keys", [])):
        click.echo(f"  {row['key']:<24} {row['decision']:<9} log e(drop) "
                   f"{row['log_e_drop']:+8.2f}  rows {row['rows_canary']}/"
                   f"{row['rows_champion']}")


def _run(ctl, tracking_uri: str, interval: float, timeout, max_now, as_json: bool) -> None:
    from mleops.registry import Registry
    from mleops.rollout.control.fleet_controller import DONE, summary

    done = {"n": 0}

    def counted(_st) -> None:
        done["n"] += 1
        if max_now and done["n"] >= max_now:
            raise _Enough

    try:
        st = ctl.drive(Registry(tracking_uri or None), interval_s=interval, timeout_s=timeout,
                       on_tick=counted)
    except _Enough:
        st = ctl.load()
    _echo(summary(st), as_json)
    raise SystemExit(exits.OK if st.phase == DONE else exits.FAILED)


class _Enough(Exception):
    """``--ticks`` reached (the state is saved at every tick)."""


@click.group("fleet")
def fleet() -> None:
    """Per-key canaries of a fleet: e-BH across keys, one merged version at the end."""


@fleet.command("start")
@click.argument("name")
@click.option("--candidate-version", required=True)
@click.option("--server", required=True, help="The fleet canary server's base URL.")
@click.option("--routing-file", required=True,
              help="The routing file that server re-reads, or on a cluster the ConfigMap its "
                   "pod mounts: configmap://NAMESPACE/NAME (`mleops deploy fleet-canary`).")
@click.option("--served-name", default="", help="The model's name on the server (default NAME).")
@click.option("--steps", default="10,25,50", show_default=True,
              help="Each key's canary share (percent), step by step.")
@click.option("--ticks-per-step", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--max-ticks", type=click.IntRange(min=1), default=360, show_default=True,
              help="Time limit in ticks: keys undecided then stay on the champion.")
@click.option("--mode", type=click.Choice(["split", "shadow"]), default="split",
              show_default=True)
@click.option("--fdr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="False discovery rate across keys (e-BH).")
@click.option("--min-drop", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="Nats/row a key may lose and still be promoted.")
@click.option("--min-rows", type=click.IntRange(min=2), default=100, show_default=True,
              help="Burn-in: rows per arm of a key before it may decide.")
@click.option("--min-units", type=click.IntRange(min=2), default=20, show_default=True,
              help="Burn-in: requests per arm of a key before it may decide.")
@click.option("--detach", is_flag=True, help="Start and return (drive with `resume`).")
@_state_dir
@_drive_options
def start_cmd(name, candidate_version, server, routing_file, served_name, steps, ticks_per_step,
              max_ticks, mode, fdr, min_drop, min_rows, min_units, detach, state_dir, interval, timeout, max_now,
              tracking_uri, as_json) -> None:
    """Start a fleet rollout of CANDIDATE against NAME's champion."""
    from mleops.errors import DataError
    from mleops.fleet_artifact import key_labels
    from mleops.registry import Registry
    from mleops.rollout.backends.fleet_configmap import is_configmap, parse
    from mleops.rollout.control import parse_steps
    from mleops.rollout.control.fleet_controller import FleetRollout, summary
    from mleops.rollout.kernels.fleet import FleetConfig

    if is_configmap(routing_file):
        parse(routing_file)  # a malformed one is refused before anything starts

    reg = Registry(tracking_uri or None)
    champion = reg.load_fleet(name)
    candidate = reg.load_fleet(name, candidate_version)
    if champion is None or candidate is None:
        raise DataError(f"{name!r} needs a champion fleet and fleet version {candidate_version}")
    if str(champion[0]) == str(candidate_version):
        raise DataError(f"version {candidate_version} already is {name!r}'s champion")
    ctl = FleetRollout(state_dir, name)
    url = f"{server.rstrip('/')}/v2/models/{served_name or name}/evidence"
    with ctl.driving():
        ctl.start(champion_version=str(champion[0]), candidate_version=str(candidate_version),
                  labels=key_labels(candidate[1].keys).tolist(), evidence_url=url,
                  routing_path=routing_file if is_configmap(routing_file)
                  else os.path.abspath(routing_file),
                  config=FleetConfig(mode="paired" if mode == "shadow" else "unpaired",
                                     min_drop=min_drop, fdr=fdr, min_rows=min_rows,
                                     min_units=min_units),
                  steps=parse_steps(steps), ticks_per_step=ticks_per_step, max_ticks=max_ticks)
    if detach:
        _echo(summary(ctl.load()), as_json)
        return
    _run(ctl, tracking_uri, interval, timeout, max_now, as_json)


@fleet.command("resume")
@click.argument("name")
@_state_dir
@_drive_options
def resume_cmd(name, state_dir, interval, timeout, max_now, tracking_uri, as_json) -> None:
    """Drive a started (or killed) fleet rollout on."""
    from mleops.rollout.control.fleet_controller import FleetRollout

    _run(FleetRollout(state_dir, name), tracking_uri, interval, timeout, max_now, as_json)


@fleet.command("status")
@click.argument("name")
@click.option("--keys", "all_keys", is_flag=True, help="Every key, worst first.")
@_state_dir
@click.option("--json", "as_json", is_flag=True)
def status_cmd(name, all_keys, state_dir, as_json) -> None:
    """Counts (promoted, rolled back, undecided) and the worst keys."""
    from mleops.errors import DataError

    if not echo_fleet_status(state_dir, name, all_keys, as_json):
        raise DataError(f"no fleet rollout {name!r} in {state_dir}")


def echo_fleet_status(state_dir: str, name: str, all_keys: bool, as_json: bool) -> bool:
    """Print the fleet rollout ``name``'s status; False if there is none (also what
    `mleops rollout status` asks first)."""
    from mleops.rollout.control.fleet_controller import FleetRollout, summary

    st = FleetRollout(state_dir, name).load()
    if st is not None:
        _echo(summary(st, all_keys=all_keys), as_json)
    return st is not None


@fleet.command("abort")
@click.argument("name")
@click.option("--reason", default="aborted by user", show_default=True)
@_state_dir
def abort_cmd(name, reason, state_dir) -> None:
    """Every key back on the champion; nothing registered."""
    from mleops.rollout.control.fleet_controller import FleetRollout, summary

    ctl = FleetRollout(state_dir, name)
    with ctl.driving():
        _echo(summary(ctl.abort(reason)), False)
