"""Options shared by more than one command: ``mleops pipeline run``'s, which
``mleops monitor --on-drift retrain`` also parses (``--pipeline-args``), defined once."""

from __future__ import annotations

import click

from mleops._config import GATE_TOLERANCE as DEFAULT_TOLERANCE
from mleops._config import INCONCLUSIVE_POLICIES

#: ``mleops pipeline run``'s options (``--host`` & co. included)
PIPELINE_RUN = [
    click.option("--data", "data_uri", required=True, help="Training data (CSV/Parquet path or file:// URI)."),
    click.option("--family", required=True),
    click.option("--model-name", required=True, help="Registered model name (and MLflow experiment)."),
    click.option("--column", default=""),
    click.option("--censor-column", default="", help="1 = event observed, 0 = right-censored."),
    click.option("--weights-column", default=""),
    click.option("--covariates", default="", help="Comma-separated covariate columns."),
    click.option("--time-column", default="", help="Orders rows for --time-ordered splits."),
    click.option("--time-ordered", is_flag=True, help="Hold out the latest rows instead of a random split."),
    click.option("--threshold", type=float, default=0.0, help="genpareto threshold."),
    click.option("--components", type=int, default=0, help="gaussian mixture components."),
    click.option("--validation-data", "validation_data_uri", default="",
                 help="Fixed held-out set (else a seeded split of --data)."),
    click.option("--holdout-fraction", type=float, default=0.2),
    click.option("--seed", type=int, default=0),
    click.option("--tracking-uri", default="", help="MLflow tracking URI (default: ./mlruns.db)."),
    click.option("--gate-tolerance", type=float, default=DEFAULT_TOLERANCE, show_default=True,
                 help="Allowed held-out loglik deficit per row (nats) vs the champion."),
    click.option("--gate-confidence", type=float, default=0.95),
    click.option("--gate-test", type=click.Choice(["z", "bootstrap"]), default="z"),
    click.option("--gate-on-inconclusive", type=click.Choice(list(INCONCLUSIVE_POLICIES)),
                 default=INCONCLUSIVE_POLICIES[0], show_default=True,
                 help="When held-out rows cannot tell candidate and champion apart: register "
                      "as challenger (the canary decides, exit 0) or reject (exit 3)."),
    click.option("--accelerator-type", "train_accelerator_type", default="",
                 help="KFP accelerator for the train task (e.g. nvidia.com/gpu)."),
    click.option("--deploy-namespace", default="models", help="Namespace of the SeldonDeployment."),
    click.option("--deploy-canary-traffic", type=int, default=10,
                 help="Percent of traffic for a newly registered challenger."),
    click.option("--deploy-apply", is_flag=True, help="Apply the manifest (needs a cluster)."),
    click.option("--artifacts-destination", default="",
                 envvar="MLEOPS_ARTIFACTS_DESTINATION",
                 help="Tracking server's artifact store (e.g. s3://bucket/path) for modelUri."),
    click.option("--host", default="", help="KFP API server: submit instead of running locally."),
    click.option("--pipeline-root", default="", help="Local runner output directory."),
    click.option("--no-cache", is_flag=True, help="Disable KFP step caching."),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
]


def pipeline_run_options(f):
    """Decorate a command with every ``mleops pipeline run`` option."""
    for option in reversed(PIPELINE_RUN):
        f = option(f)
    return f


def parse_pipeline_run(args: list[str], prog: str = "pipeline run") -> dict:
    """``mleops pipeline run`` arguments -> its parameters (click.UsageError on bad ones)."""
    command = click.command(prog)(pipeline_run_options(lambda **kw: kw))
    return dict(command.make_context(prog, list(args)).params)
