"""``mleops serving-env``: the Seldon (v1) model server's own environment (seldon-core 1.17.1
pins numpy<2 and protobuf<4), made in the user cache without a checkout."""

from __future__ import annotations

import sys

import click


@click.group("serving-env")
def serving_env() -> None:
    """The Seldon (v1) model server's environment (`$MLEOPS_SERVING_ENV_DIR`, default the
    user cache). `mleops serve --protocol v1` makes it on first use."""


@serving_env.command("create")
def create_cmd() -> None:
    """Make the environment if absent (once, ~2-4 min; idempotent) and print its
    interpreter."""
    from mleops.serving import env

    py = env.create(progress=lambda line: click.echo(line, err=True))
    click.echo(str(py))


@serving_env.command("path")
def path_cmd() -> None:
    """Print the environment's interpreter (what MLEOPS_SERVING_PYTHON takes); exit 1 if it
    is not made."""
    from mleops.serving import env

    py = env.path()
    if py is None:
        click.echo(f"error: {env.absent_message()}", err=True)
        sys.exit(1)
    click.echo(str(py))
