"""``mleops``: the command-line face of the platform.

Each subcommand imports what it needs inside its body, so a fresh ``mleops fit`` process
pays for jax only (no mlflow, no kfp). Bad input exits with status 2 and one clear line.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys

import click

from mleops.cli import exits
from mleops.cli.options import fit_column_options

#: subcommand -> "module:attribute", imported when named (click's lazy-group pattern), so
#: ``mleops fit`` does not import the deploy, pipeline and rollout commands' modules
LAZY = {"deploy": "mleops.cli.deploy:deploy", "judge": "mleops.cli.judge:judge_cmd",
        "models": "mleops.cli.models:models", "monitor": "mleops.cli.monitor:monitor_cmd",
        "pipeline": "mleops.cli.pipeline:pipeline", "predict": "mleops.cli.serve:predict_cmd",
        "rollout": "mleops.cli.rollout:rollout", "serve": "mleops.cli.serve:serve_cmd",
        "serving-env": "mleops.cli.serving_env:serving_env"}


class Group(click.Group):
    """Turns mleops errors into one-line messages with the documented exit codes; loads the
    ``LAZY`` subcommands on first use."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *LAZY})

    def get_command(self, ctx, name):
        if name not in self.commands and name in LAZY:
            module, attr = LAZY[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

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
@click.option("--key-column", "key_columns", multiple=True,
              help="Fit one model per key (a fleet); repeat for a composite key.")
@click.option("--model-dir", type=click.Path(file_okay=False),
              help="With --key-column: write the fleet artifact (fleet.json + fleet.parquet) "
                   "here, what `mleops serve --model-dir` serves.")
@click.option("--unknown-key", type=click.Choice(["reject", "pooled"]), default="reject",
              show_default=True, help="With --model-dir: what the fleet answers for a key it "
              "has no model for: a clear error, or the pooled fit over every key's rows.")
def fit_cmd(data, family, column, censor_column, covariates, threshold, weights_column, k,
            method, as_json, distributed, output, max_memory, key_columns, model_dir,
            unknown_key) -> None:
    """Fit FAMILY to a column of DATA (CSV/Parquet file, Parquet directory, s3:// gs:// URI);
    with --key-column, one model per key."""
    if key_columns:
        from mleops.cli.fleet import fit_fleet_cmd

        refused = {"--covariates": covariates, "--distributed": distributed}
        return fit_fleet_cmd(data, family, list(key_columns), column=column,
                             max_memory=max_memory,
                             censor_column=censor_column, weights_column=weights_column,
                             threshold=threshold, k=k, method=method, as_json=as_json,
                             output=output, model_dir=model_dir, unknown_key=unknown_key,
                             refused=[o for o, v in refused.items() if v])
    if model_dir:
        from mleops.errors import DataError

        raise DataError("--model-dir writes a fleet artifact: it needs --key-column")
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


def run() -> None:
    """The ``mleops`` console script. By now jax, click and mleops are imported: ~100,000
    objects that live as long as the process. Freezing them keeps every later collection,
    and the interpreter's exit, from scanning them again: 0.1-0.2 s of a 0.7 s ``mleops
    fit`` (``benchmarks/fit_vs_scipy.py``, process row). Only here, not in the group
    callback: an in-process caller (tests, CliRunner) keeps its collector as it was."""
    gc.freeze()
    main()


if __name__ == "__main__":  # pragma: no cover
    run()
