"""``mleops pipeline``: compile the training pipeline, run it locally or on a KFP host.

Exit codes for CI: 0 a version was registered (or the run was submitted), 3 the gate
rejected the candidate, 2 bad input, 1 any other failure. ``--json`` keeps stdout pure JSON
(task logs go to stderr).
"""

from __future__ import annotations

import contextlib
import json
import sys

import click


@click.group("pipeline")
def pipeline() -> None:
    """Kubeflow training pipeline: compile, run."""


@pipeline.command("compile")
@click.option("--output", "-o", default=None, help="YAML path (default pipelines/training.yaml).")
def compile_cmd(output) -> None:
    """Compile the pipeline to KFP IR YAML."""
    from ..pipeline.runner import compile_pipeline

    click.echo(compile_pipeline(output))


@pipeline.command("run")
@click.option("--data", "data_uri", required=True, help="Training data (CSV/Parquet path or file:// URI).")
@click.option("--family", required=True)
@click.option("--model-name", required=True, help="Registered model name (and MLflow experiment).")
@click.option("--column", default="")
@click.option("--censor-column", default="", help="1 = event observed, 0 = right-censored.")
@click.option("--weights-column", default="")
@click.option("--covariates", default="", help="Comma-separated covariate columns.")
@click.option("--time-column", default="", help="Orders rows for --time-ordered splits.")
@click.option("--time-ordered", is_flag=True, help="Hold out the latest rows instead of a random split.")
@click.option("--threshold", type=float, default=0.0, help="genpareto threshold.")
@click.option("--components", type=int, default=0, help="gaussian mixture components.")
@click.option("--validation-data", "validation_data_uri", default="",
              help="Fixed held-out set (else a seeded split of --data).")
@click.option("--holdout-fraction", type=float, default=0.2)
@click.option("--seed", type=int, default=0)
@click.option("--tracking-uri", default="", help="MLflow tracking URI (default: ./mlruns.db).")
@click.option("--gate-tolerance", type=float, default=0.002,
              help="Allowed held-out loglik deficit per row (nats) vs the champion.")
@click.option("--gate-confidence", type=float, default=0.95)
@click.option("--gate-test", type=click.Choice(["z", "bootstrap"]), default="z")
@click.option("--accelerator-type", "train_accelerator_type", default="",
              help="KFP accelerator for the train task (e.g. nvidia.com/gpu).")
@click.option("--deploy-namespace", default="models", help="Namespace of the SeldonDeployment.")
@click.option("--deploy-canary-traffic", type=int, default=10,
              help="Percent of traffic for a newly registered challenger.")
@click.option("--deploy-apply", is_flag=True, help="Apply the manifest (needs a cluster).")
@click.option("--artifacts-destination", default="",
              envvar="MLEOPS_ARTIFACTS_DESTINATION",
              help="Tracking server's artifact store (e.g. s3://bucket/path) for modelUri.")
@click.option("--host", default="", help="KFP API server: submit instead of running locally.")
@click.option("--pipeline-root", default="", help="Local runner output directory.")
@click.option("--no-cache", is_flag=True, help="Disable KFP step caching.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run_cmd(host, pipeline_root, no_cache, as_json, **kw) -> None:
    """Run the training pipeline; the exit code says whether a version was registered."""
    from ..pipeline.runner import RunRequest, exit_code, run_pipeline

    req = RunRequest(**kw)
    with contextlib.redirect_stdout(sys.stderr):
        result = run_pipeline(req, host=host, pipeline_root=pipeline_root,
                              enable_caching=not no_cache)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        if result.get("submitted"):
            click.echo(f"submitted KFP run {result['kfp_run_id']} to {host}")
        else:
            g = result["gate"]
            click.echo(f"gate: {'PASSED' if g['passed'] else 'REJECTED'}")
            for r in g["reasons"]:
                click.echo(f"  - {r}")
            click.echo(f"MLflow run {result['run_id']}; registered version: "
                       f"{result['registered_version']}")
    sys.exit(exit_code(result))
