"""``mleops rollout``: canary rollouts driven by live log-likelihood.

Exit codes of ``start``/``resume``: 0 promoted (or waiting for confirmation), 3 rolled back,
1 refused/failed or still running at ``--timeout``, 2 bad input.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import click

from mleops.cli import exits
from mleops.cli.options import parse_labels, rollout_test, rollout_test_options


def _store(kubernetes: bool, namespace: str, state_dir: str, target: str = "seldon"):
    from mleops.rollout import state_store

    return state_store(kubernetes=kubernetes, namespace=namespace, state_dir=state_dir,
                       target=target)


def _state_dir_option(f):
    return click.option("--state-dir", default=lambda: os.environ.get(
        "MLEOPS_ROLLOUT_DIR", os.path.join(".mleops", "rollouts")), show_default=".mleops/"
        "rollouts ($MLEOPS_ROLLOUT_DIR)", help="Where local rollout states are kept.")(f)


def _cluster_options(f):
    for opt in reversed([
            click.option("--kubernetes", is_flag=True,
                         help="Drive a SeldonDeployment (state in its annotations)."),
            click.option("--target", type=click.Choice(["seldon", "kserve"]), default="seldon",
                         show_default=True, help="kserve: drive the model's InferenceService "
                         "(implies a cluster; state on a Lease of the same name)."),
            click.option("--namespace", default="models", show_default=True),
            click.option("--prometheus", default="http://prometheus-operated.monitoring:9090",
                         show_default=True,
                         help="Prometheus HTTP API (with --kubernetes or --evidence "
                              "prometheus)."),
    ]):
        f = opt(f)
    return f


def _print(state, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(state.to_dict(), indent=2))
        return
    v = state.verdict or {}
    click.echo(f"rollout {state.name}: {state.phase}  candidate v{state.candidate_version} vs "
               f"champion v{state.champion_version}  mode={state.mode}  "
               f"canary weight {state.weight}% (step {state.step_index + 1}/{len(state.steps)})")
    if v:
        num = lambda k: "n/a" if v.get(k) is None else f"{v[k]:+.4f}"
        click.echo(f"  canary rows {v.get('rows_canary')}, champion rows "
                   f"{v.get('rows_champion')}, mean difference {num('mean_diff')} nats/row "
                   f"[{num('ci_low')}, {num('ci_high')}]")
    if state.reason:
        click.echo(f"  {state.reason}")


def _drive(controller, name, *, replay, rate, batch, columns, router_url, interval, timeout,
           as_json) -> None:
    """Run the controller (with an optional replayer feeding the router) to the end."""
    from mleops.rollout.backends.local import Replayer, load_rows

    sender = None
    if replay:  # named as the candidate's servers take them (its covariates by name)
        state = controller.status(name)
        found = controller.registry.load_version(name, state.candidate_version)
        rows, names = load_rows(replay, columns.split(",") if columns else None,
                                found[1].features if found else None)
        sender = Replayer.for_plane(router_url, rows, names, rate=rate, batch=batch).start()
    last = [None]

    def narrate(state):
        key = (state.phase, state.weight, state.reason[:40])
        if key != last[0] and not as_json:
            _print(state, False)
        last[0] = key
    try:
        state = controller.run(name, interval=interval, timeout=timeout, on_tick=narrate)
    finally:
        if sender is not None:
            sender.stop()
    if sender is not None:
        click.echo(f"replay: {sender.sent} requests sent, {sender.failed} failed", err=True)
    if as_json:
        _print(state, True)
    sys.exit(exits.for_rollout(state.phase))


_protocol_option = click.option(
    "--protocol", type=click.Choice(["v2", "v1"]), default="v2", show_default=True,
    help="The local data plane's wire protocol: OIP v2 (KServe's server, this environment) or "
         "Seldon v1 (its own environment, made on first use).")


@click.group("rollout")
def rollout() -> None:
    """Canary rollouts: promote or roll back on live log-likelihood."""


@rollout.command("start")
@click.argument("name")
@click.option("--candidate-version", required=True, help="Registered version to canary.")
@click.option("--steps", default="10,25,50,100", show_default=True,
              help="Canary traffic (or mirrored share) per step, percent.")
@click.option("--mode", type=click.Choice(["split", "shadow"]), default="split",
              show_default=True, help="split: the canary answers its share; shadow: it scores "
              "mirrored rows, the champion answers all (paired test, more powerful).")
@click.option("--confirm-before-promote", is_flag=True,
              help="Wait in waiting_confirmation for `mleops rollout confirm`.")
@rollout_test_options
@click.option("--router", "router_url", default="",
              help="URL of a running `mleops rollout serve` (default: start one here).")
@_cluster_options
@click.option("--artifacts-destination", envvar="MLEOPS_ARTIFACTS_DESTINATION", default="",
              help="With --kubernetes: the tracking server's artifact store (s3://...), for "
              "versions stored behind its mlflow-artifacts proxy.")
@click.option("--env-secret", default="", help="With --kubernetes: Secret with the storage "
              "initializer's credentials.")
@click.option("--deployment-mode", type=click.Choice(["Serverless", "Knative", "Standard"]),
              default="Serverless", show_default=True,
              help="With --target kserve: KServe's mode (canaryTrafficPercent, or spec.canary "
                   "in Standard mode on KServe >= 0.20).")
@click.option("--service-account", default="", help="With --target kserve: account with the "
              "storage credentials.")
@click.option("--tracking-uri", default="", help="MLflow tracking URI ($MLFLOW_TRACKING_URI).")
@_state_dir_option
@click.option("--replay", type=click.Path(dir_okay=False, exists=True),
              help="Replay this file's rows through the router while the rollout runs.")
@click.option("--rate", type=float, default=20.0, show_default=True, help="Replay requests/s.")
@click.option("--batch", type=int, default=20, show_default=True, help="Rows per request.")
@click.option("--columns", default="", help="Columns to replay (default: all numeric).")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between controller ticks.")
@click.option("--timeout", type=float, default=None, help="Stop driving after this long.")
@click.option("--detach", is_flag=True, help="Start and return (drive with `resume`).")
@click.option("--supersede", is_flag=True,
              help="Replace a rollout in progress for this model (it is rolled back first).")
@click.option("--evidence", type=click.Choice(["router", "prometheus"]), default="router",
              show_default=True,
              help="Locally: score from the router's row records (paired in shadow mode) or "
                   "from Prometheus scraping the model servers (--prometheus), as on a "
                   "cluster. --kubernetes always uses Prometheus.")
@click.option("--evidence-label", "evidence_labels", multiple=True, metavar="KEY=VALUE",
              help="With --evidence prometheus: a label every series must carry (e.g. "
                   "job=mleops-local); repeatable.")
@_protocol_option
@click.option("--json", "as_json", is_flag=True)
def start_cmd(name, candidate_version, steps, mode, confirm_before_promote, min_drop, alpha,
              step_min_rows, metrics_timeout, router_url, kubernetes, target, namespace,
              prometheus, artifacts_destination, env_secret, deployment_mode, service_account,
              tracking_uri, state_dir, replay, rate, batch, columns, interval, timeout, detach,
              supersede, evidence, evidence_labels, protocol, as_json) -> None:
    """Canary CANDIDATE_VERSION of registered model NAME against its champion."""
    from mleops.registry import Registry
    from mleops.rollout import Controller, open_backend

    kubernetes = kubernetes or target == "kserve"
    if detach and not (kubernetes or router_url):
        raise click.UsageError("--detach needs --router (a plane that outlives this command)")
    # start() sets the pairing
    test, g = rollout_test(min_drop, alpha, step_min_rows, metrics_timeout)
    labels = parse_labels(evidence_labels)
    registry = Registry(tracking_uri or None)
    from_prometheus = kubernetes or evidence == "prometheus"
    with open_backend(name, registry=registry, kubernetes=kubernetes, router_url=router_url,
                      namespace=namespace, prometheus=prometheus if from_prometheus else "",
                      artifacts_destination=artifacts_destination, env_secret=env_secret,
                      evidence_labels=labels, target=target, deployment_mode=deployment_mode,
                      service_account=service_account, protocol=protocol) as backend:
        router_url = backend.describe().get("router", router_url)
        controller = Controller(_store(kubernetes, namespace, state_dir, target), backend,
                                registry)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwinds: servers stopped
        state = controller.start(name, candidate_version, steps=steps, mode=mode, test=test,
                                 guardrails=g, confirm_before_promote=confirm_before_promote,
                                 supersede=supersede)
        if detach:
            _print(state, as_json)
            return
        _drive(controller, name, replay=replay, rate=rate, batch=batch, columns=columns,
               router_url=router_url, interval=interval, timeout=timeout, as_json=as_json)


@rollout.command("resume")
@click.argument("name")
@_cluster_options
@click.option("--tracking-uri", default="")
@_state_dir_option
@click.option("--replay", type=click.Path(dir_okay=False, exists=True))
@click.option("--rate", type=float, default=20.0, show_default=True)
@click.option("--batch", type=int, default=20, show_default=True)
@click.option("--columns", default="")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True)
@click.option("--timeout", type=float, default=None)
@click.option("--json", "as_json", is_flag=True)
def resume_cmd(name, kubernetes, target, namespace, prometheus, tracking_uri, state_dir, replay,
               rate, batch, columns, interval, timeout, as_json) -> None:
    """Drive an existing rollout from its persisted state (e.g. after a controller restart)."""
    from mleops.registry import Registry
    from mleops.rollout import Controller, backend_from

    store = _store(kubernetes, namespace, state_dir, target)
    state = Controller(store, None, None).status(name)
    registry = Registry(tracking_uri or None)
    controller = Controller(store, backend_from(state.backend, registry), registry)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    _drive(controller, name, replay=replay, rate=rate, batch=batch, columns=columns,
           router_url=state.backend.get("router", ""), interval=interval, timeout=timeout,
           as_json=as_json)


@rollout.command("status")
@click.argument("name")
@_cluster_options
@_state_dir_option
@click.option("--keys", "all_keys", is_flag=True,
              help="A fleet rollout: every key, worst first (default: the 10 worst).")
@click.option("--json", "as_json", is_flag=True)
def status_cmd(name, kubernetes, target, namespace, prometheus, state_dir, all_keys,
               as_json) -> None:
    """Phase, traffic, the test's numbers and the last reason (a fleet rollout: counts of
    promoted, rolled back and undecided keys, and the worst keys)."""
    from mleops.rollout import Controller

    if not kubernetes and target == "seldon":
        from mleops.cli.rollout_fleet import echo_fleet_status

        if echo_fleet_status(state_dir, name, all_keys, as_json):
            return
    _print(Controller(_store(kubernetes, namespace, state_dir, target), None, None).status(name),
           as_json)


@rollout.command("abort")
@click.argument("name")
@click.option("--reason", default="aborted by user", show_default=True)
@_cluster_options
@click.option("--tracking-uri", default="")
@_state_dir_option
def abort_cmd(name, reason, kubernetes, target, namespace, prometheus, tracking_uri,
              state_dir) -> None:
    """Roll back now: canary traffic to 0, champion kept, the version tagged with why."""
    from mleops.registry import Registry
    from mleops.rollout import Controller, backend_from

    store = _store(kubernetes, namespace, state_dir, target)
    state = Controller(store, None, None).status(name)
    registry = Registry(tracking_uri or None)
    controller = Controller(store, backend_from(state.backend, registry), registry)
    state, warning = controller.request_abort(name, reason)
    if warning:  # registry/backend unreachable: the running controller will do it
        click.echo(f"warning: {warning}", err=True)
    _print(state, False)


@rollout.command("confirm")
@click.argument("name")
@_cluster_options
@_state_dir_option
def confirm_cmd(name, kubernetes, target, namespace, prometheus, state_dir) -> None:
    """Let a rollout waiting for confirmation promote at its next tick."""
    from mleops.rollout import Controller

    _print(Controller(_store(kubernetes, namespace, state_dir, target), None, None).confirm(
        name), False)


@rollout.command("serve")
@click.argument("name")
@click.option("--port", type=int, default=8080, show_default=True,
              help="Router port (the data plane clients call).")
@click.option("--admin-port", type=int, default=0, show_default="a free port",
              help="The router's admin API port (token in the plane's owner-only record).")
@click.option("--tracking-uri", default="")
@click.option("--log-dir", default="", help="Model server logs go here.")
@_protocol_option
def serve_cmd(name, port, admin_port, tracking_uri, log_dir, protocol) -> None:
    """Local data plane: NAME's champion server behind a router on 127.0.0.1:PORT.

    The admin API (traffic, canary, promotion) listens on its own loopback port and needs the
    bearer token written, readable by this user only, to $MLEOPS_PLANE_DIR
    (~/.mleops/planes); `mleops rollout start --router URL` finds it there. Run it under a
    supervisor that restarts it (systemd `Restart=always`, a container restart policy): a
    restarted plane serves the registry's champion again and a resumed rollout redeploys
    its canary."""
    import threading

    from mleops.registry import Registry
    from mleops.rollout.backends.local import LocalDataPlane

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    from mleops.rollout.backends.local.admin import plane_dir

    with LocalDataPlane(name, tracking_uri=Registry(tracking_uri or None).uri, port=port,
                        log_dir=log_dir or None, admin_port=admin_port,
                        protocol=protocol) as plane:
        click.echo(json.dumps({"router": plane.url, "admin": plane.admin_url,
                               "credentials": str(plane_dir()), **plane.router.routes()}))
        sys.stdout.flush()
        done.wait()


from mleops.cli.rollout_fleet import fleet  # noqa: E402  (a subgroup: `mleops rollout fleet`)

rollout.add_command(fleet)
