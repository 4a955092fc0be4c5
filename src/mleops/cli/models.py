"""``mleops models``: list versions, promote, roll back (the registry side of CI)."""

from __future__ import annotations

import json

import click

_uri = click.option("--tracking-uri", default="", help="MLflow tracking URI.")


def _registry(uri: str):
    from mleops.registry import Registry

    return Registry(uri or None)


@click.group("models")
def models() -> None:
    """Registered model versions and their aliases."""


@models.command("list")
@click.argument("name")
@_uri
@click.option("--json", "as_json", is_flag=True)
def list_cmd(name, tracking_uri, as_json) -> None:
    """Versions of NAME with aliases and lineage tags."""
    rows = _registry(tracking_uri).list_versions(name)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        aliases = ",".join(r.get("aliases", [])) or "-"
        click.echo(f"v{r['version']:<5} {aliases:<22} run={r.get('run_id', '')} "
                   f"data={r.get('tags', {}).get('mleops.data_hash', '')[:12]}")


@models.command("promote")
@click.argument("name")
@click.option("--version", required=True)
@click.option("--alias", default="champion")
@click.option("--force", is_flag=True,
              help="Promote even a version a rollout rolled back (its reason is shown).")
@_uri
def promote_cmd(name, version, alias, force, tracking_uri) -> None:
    """Point ALIAS (default champion) at VERSION; the old champion is kept for rollback."""
    click.echo(json.dumps(_registry(tracking_uri).promote(name, version, alias, force=force),
                          default=str))


@models.command("rollback")
@click.argument("name")
@_uri
def rollback_cmd(name, tracking_uri) -> None:
    """Champion back to the previous champion."""
    click.echo(json.dumps(_registry(tracking_uri).rollback(name), default=str))
