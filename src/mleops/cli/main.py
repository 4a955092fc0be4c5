"""``mleops``: the command-line face of the platform.

Each subcommand imports what it needs inside its body, so a fresh ``mleops fit`` process
pays for jax only (no mlflow, no kfp). Bad input exits with status 2 and one clear line.
"""

from __future__ import annotations

import json
import sys

import click

from mleops.cli import exits
from mleops.cli.options import fit_column_options


class Group(click.Group):
    """Turns mleops errors into one-line messages with the documented exit codes."""

    def invoke(self, ctx):
        from mleops.errors import MleopsError

        try:
            return super().invoke(ctx)
        except MleopsError as e:  # bad input, fit failed, registry unreachable, task failed...
            click.echo(f"error: {e}", err=True)
            sys.exit(exits.for_error(e))


@click.group(cls=Group)
@click.version_option(package_name="mleops")
def main() -> None:
    """MLE models from fit to production: fit, pipelines, registry, serving, rollouts."""
    from mleops._config import enable_compilation_cache

    enable_compilation_cache()  # a fresh process reuses compiled fit kernels


@main.command("fit")
@click.argument("data")
@click.option("--family", required=True, help="Family name (scipy names accepted).")
@fit_column_options
@click.option("--method", default="auto", type=click.Choice(["auto", "newton", "lbfgs"]))
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
@click.option("--distributed", is_flag=True,
              help="Join the job's processes (JAXJob / Trainer env) and fit sharded; only "
                   "process 0 prints. What the rendered JAXJob pods run.")
@click.option("--output", type=click.Path(dir_okay=False),
              help="Also write the result JSON to this file.")
@click.option("--max-memory", help="Stream the data in batches holding about this much "
              "(512MB, 2GB); default: streamed only when the data would not fit in memory.")
def fit_cmd(data, family, column, censor_column, covariates, threshold, weights_column, k,
            method, as_json, distributed, output, max_memory) -> None:
    """Fit FAMILY to a column of DATA (CSV/Parquet file, Parquet directory, s3:// gs:// URI)."""
    from mleops.batches import parse_size
    from mleops.columns import fit_table
    from mleops.fit.sharded import initialize_distributed

    rank = initialize_distributed() if distributed else 0
    res = fit_table(data, family, column=column, censor_column=censor_column,
                    covariates=covariates, threshold=threshold, weights_column=weights_column,
                    k=k, method=method, sharded=distributed,
                    max_memory=parse_size(max_memory) if max_memory else None)
    if rank:  # every process holds the same result; one prints it
        return
    text = json.dumps(res.to_dict(), indent=2)
    if output:  # a local path, or an object store (what a TrainJob's pods write to)
        from mleops.storage import write_text

        write_text(output, text + "\n")
    if as_json or distributed:
        click.echo(text)
    else:
        click.echo(res.summary())
        if not res.converged:
            click.echo(f"warning: {res.message}", err=True)


def _register_subcommands() -> None:
    from mleops.cli.deploy import deploy
    from mleops.cli.judge import judge_cmd
    from mleops.cli.models import models
    from mleops.cli.monitor import monitor_cmd
    from mleops.cli.pipeline import pipeline
    from mleops.cli.rollout import rollout
    from mleops.cli.serve import predict_cmd, serve_cmd

    main.add_command(deploy)
    main.add_command(judge_cmd)
    main.add_command(pipeline)
    main.add_command(models)
    main.add_command(monitor_cmd)
    main.add_command(rollout)
    main.add_command(serve_cmd)
    main.add_command(predict_cmd)


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    main()
