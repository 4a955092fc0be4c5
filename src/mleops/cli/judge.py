"""``mleops judge``: the rollout decision served to Argo Rollouts and Flagger over HTTP."""

from __future__ import annotations

import json
import signal
import sys
import threading

import click

from mleops.cli.options import parse_labels, rollout_test, rollout_test_options


@click.command("judge")
@click.option("--prometheus", required=True, help="Prometheus HTTP API the model servers' "
              "series are read from.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address (0.0.0.0 in a pod, behind its Service).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="HTTP port (0: a free one).")
@click.option("--state-dir", default="", help="Keep each analysis here (JSON), so a "
              "restarted judge resumes; default: in memory only.")
@click.option("--evidence-label", "evidence_labels", multiple=True, metavar="KEY=VALUE",
              help="A label every series must carry (e.g. namespace=models); repeatable.")
@rollout_test_options
@click.option("--min-interval", type=click.FloatRange(min=0), default=10.0,
              show_default=True, help="Seconds between two reads of Prometheus for one "
              "analysis: faster polls get the last answer (no tiny blocks).")
@click.option("--max-analyses", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Analyses tracked at once (ended ones are evicted first).")
@click.option("--fleet-evidence", default="", metavar="URL", help="Also judge fleets at "
              "/v1/judge/fleet/MODEL: their canary server's counters, {model} filled in, e.g. "
              "http://{model}-predictor.models/v2/models/{model}/evidence.")
@click.option("--fdr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Fleets: false discovery rate across keys.")
@click.option("--max-rollback-share", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Fleets: roll the service back once more than this "
              "share of keys is rolled back.")
def judge_cmd(prometheus, host, port, state_dir, evidence_labels, min_drop, alpha,
              step_min_rows, metrics_timeout, min_interval, max_analyses, fleet_evidence, fdr,
              max_rollback_share) -> None:
    """Serve GET /v1/judge/MODEL?canary=V&champion=W (continue / promote / rollback),
    Flagger's rollback and confirm-promotion webhooks, and /metrics, until SIGTERM."""
    from mleops.rollout.judge.core import Judge
    from mleops.rollout.judge.server import JudgeServer

    test, guardrails = rollout_test(min_drop, alpha, step_min_rows, metrics_timeout)
    judge = Judge(prometheus, labels=parse_labels(evidence_labels), test=test,
                  guardrails=guardrails, min_interval_s=min_interval,
                  state_dir=state_dir or None, max_keys=max_analyses)
    fleet = None
    if fleet_evidence:
        from mleops.rollout.judge.fleet import FleetJudge
        from mleops.rollout.kernels.fleet import FleetConfig

        fleet = FleetJudge(fleet_evidence, config=FleetConfig(min_drop=min_drop, fdr=fdr),
                           max_rollback_share=max_rollback_share, min_interval_s=min_interval,
                           state_dir=state_dir or None, max_analyses=max_analyses)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with JudgeServer(judge, host, port, fleet=fleet) as server:
        click.echo(json.dumps({"url": server.url, "prometheus": prometheus,
                               "state_dir": state_dir or None}))
        sys.stdout.flush()
        done.wait()
