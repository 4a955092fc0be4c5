"""``mleops``: the command-line face of the platform.

Each subcommand imports what it needs inside its body, so a fresh ``mleops fit`` process
pays for jax only (no mlflow, no kfp). Bad input exits with status 2 and one clear line.
"""

from __future__ import annotations

import json
import sys

import click

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_FIT_FAILED = 3


class _Group(click.Group):
    """Turns mleops errors into one-line messages with the documented exit codes."""

    def invoke(self, ctx):
        from ..errors import DataError, FitError, MleopsError

        try:
            return super().invoke(ctx)
        except DataError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except FitError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_FIT_FAILED)
        except MleopsError as e:  # registry unreachable, pipeline task failed, ...
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_FAILED)


@click.group(cls=_Group)
@click.version_option(package_name="mleops")
def main() -> None:
    """MLE models from fit to production: fit, pipelines, registry, serving, rollouts."""
    from .._config import enable_compilation_cache

    enable_compilation_cache()  # a fresh process reuses compiled fit kernels


@main.command("fit")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--family", required=True, help="Family name (scipy names accepted).")
@click.option("--column", help="Column holding the response (default: the only one left).")
@click.option("--censor-column", help="1 = event observed, 0 = right-censored.")
@click.option("--covariates", help="Comma-separated covariate columns (an intercept 'const' is added).")
@click.option("--threshold", type=float, help="Threshold for genpareto (peaks over threshold).")
@click.option("--weights-column", help="Observation weights.")
@click.option("--components", "k", type=int, help="Components of a gaussian mixture.")
@click.option("--method", default="auto", type=click.Choice(["auto", "newton", "lbfgs"]))
@click.option("--json", "as_json", is_flag=True, help="Print the result object as JSON.")
def fit_cmd(data, family, column, censor_column, covariates, threshold, weights_column, k,
            method, as_json) -> None:
    """Fit FAMILY to a column of DATA (CSV or Parquet) by maximum likelihood."""
    from ..fit.request import fit_table

    res = fit_table(data, family, column=column, censor_column=censor_column,
                    covariates=covariates, threshold=threshold, weights_column=weights_column,
                    k=k, method=method)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
    else:
        click.echo(res.summary())
        if not res.converged:
            click.echo(f"warning: {res.message}", err=True)


def _register_subcommands() -> None:
    from .deploy import deploy
    from .models import models
    from .monitor import monitor_cmd
    from .pipeline import pipeline
    from .rollout import rollout
    from .serve import predict_cmd, serve_cmd

    main.add_command(deploy)
    main.add_command(pipeline)
    main.add_command(models)
    main.add_command(monitor_cmd)
    main.add_command(rollout)
    main.add_command(serve_cmd)
    main.add_command(predict_cmd)


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    main()
