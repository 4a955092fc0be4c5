"""``mleops pipeline``: compile the training pipeline, run it locally or on a KFP host.

Exit codes for CI (the same for a local run and, waiting for it, a run on a KFP host): 0 a
version was registered (or, with ``--no-wait``, the run was submitted), 3 the gate rejected
the candidate, 5 the candidate already is a version (same data, family and options: nothing
registered), 2 bad input, 1 any other failure (a task failed, the host run failed or timed
out). ``--json`` keeps stdout pure JSON
(task logs go to stderr).
"""

from __future__ import annotations

import contextlib
import json
import sys

import click

from mleops.cli import exits
from mleops.cli.options import pipeline_run_options, split_pipeline_run


@click.group("pipeline")
def pipeline() -> None:
    """Kubeflow training pipeline: compile, run."""


@pipeline.command("compile")
@click.option("--output", "-o", default=None, help="YAML path (default pipelines/training.yaml).")
def compile_cmd(output) -> None:
    """Compile the pipeline to KFP IR YAML."""
    from mleops.pipeline import compile_pipeline

    click.echo(compile_pipeline(output))


@pipeline.command("run")
@pipeline_run_options
def run_cmd(as_json, **kw) -> None:
    """Run the training pipeline; the exit code says whether a version was registered."""
    from mleops.gate import outcome_of
    from mleops.pipeline import RunRequest, run_pipeline

    fields, how = split_pipeline_run(kw)
    with contextlib.redirect_stdout(sys.stderr):
        result = run_pipeline(RunRequest(**fields), **how)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        if result.get("submitted"):
            click.echo(f"submitted KFP run {result['kfp_run_id']} to {kw['host']}")
        elif result.get("duplicate_of") and not result.get("gate"):
            click.echo(f"nothing to do: version {result['duplicate_of']} of "
                       f"{result['model_name']} was built from the same data, family and "
                       f"options; nothing registered")
        else:
            g = result["gate"]
            click.echo(f"gate: {outcome_of(g).upper()}")
            for r in g["reasons"]:
                click.echo(f"  - {r}")
            click.echo(f"MLflow run {result['run_id']}; registered version: "
                       f"{result['registered_version']}"
                       + (f" (duplicate of version {result['duplicate_of']})"
                          if result.get("duplicate_of") else ""))
    sys.exit(exits.for_pipeline(result))
