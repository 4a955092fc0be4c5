"""``mleops pipeline``: compile the training pipeline, run it locally or on a KFP host.

Exit codes for CI (the same for a local run and, waiting for it, a run on a KFP host): 0 a
version was registered (or, with ``--no-wait``, the run was submitted), 3 the gate rejected
the candidate (or, the champion having moved since, its re-gate did), 5 the candidate already
is a version (same data, family and options: nothing registered), 6 the champion moved on
every re-gate attempt (re-run), 2 bad input, 1 any other failure (a task failed, the host run
failed or timed out). ``--json`` keeps stdout pure JSON
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
    from mleops.errors import MleopsError
    from mleops.gate import outcome_of
    from mleops.pipeline import RunRequest, run_pipeline

    fields, how = split_pipeline_run(kw)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = run_pipeline(RunRequest(**fields), **how)
    except MleopsError as e:
        if not as_json:
            raise  # the last line of stderr names the cause (cli.main.Group)
        code = exits.for_error(e)  # CI reads the same from stdout: task, cause, message
        lines = str(e).strip().splitlines() or [type(e).__name__]
        click.echo(json.dumps({"error": lines[-1], "task": getattr(e, "task", "") or None,
                               "cause": getattr(e, "cause", "") or type(e).__name__,
                               "exit_code": code, "detail": str(e)}, indent=2))
        click.echo(f"error: {e}", err=True)
        sys.exit(code)
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
            for earlier in result.get("gate_decisions", [g])[:-1]:
                click.echo(f"gate against champion {earlier.get('champion_version') or 'none'}"
                           f": {outcome_of(earlier).upper()} (the champion moved: re-gated)")
            click.echo(f"gate: {outcome_of(g).upper()}")
            for r in g["reasons"]:
                click.echo(f"  - {r}")
            click.echo(f"MLflow run {result['run_id']}; registered version: "
                       f"{result['registered_version']}"
                       + (f" (duplicate of version {result['duplicate_of']})"
                          if result.get("duplicate_of") else ""))
    sys.exit(exits.for_pipeline(result))
