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


@models.command("show")
@click.argument("name")
@click.option("--version", default=None, help="A version number (default: the --alias).")
@click.option("--alias", default="champion", show_default=True)
@click.option("--keys", "show_keys", is_flag=True,
              help="For a fleet: the per-key table (key, rows, parameters, status, lineage).")
@_uri
@click.option("--json", "as_json", is_flag=True)
def show_cmd(name, version, alias, show_keys, tracking_uri, as_json) -> None:
    """One version of NAME: its aliases and tags; with --keys, a fleet's per-key table."""
    from mleops.errors import DataError

    reg = _registry(tracking_uri)
    rows = reg.list_versions(name)
    if not rows:
        raise DataError(f"no registered model {name!r} (or it has no versions)")
    if version is None:
        version = next((r["version"] for r in rows if alias in r["aliases"]), None)
        if version is None:
            raise DataError(f"model {name!r} has no alias {alias!r}; pass --version")
    row = next((r for r in rows if r["version"] == str(version)), None)
    if row is None:
        raise DataError(f"model {name!r} has no version {version!r}")
    doc = {k: row[k] for k in ("version", "aliases", "run_id", "status", "tags")}
    fleet = None
    if show_keys:
        from mleops.pipeline.fleet_steps import fleet_version

        fleet = fleet_version(reg, name, version)
        table = fleet.to_table().to_pandas()
        doc["keys"] = json.loads(table.to_json(orient="records"))
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    click.echo(f"{name} v{doc['version']} aliases={','.join(doc['aliases']) or '-'} "
               f"run={doc['run_id']}")
    for k, v in sorted(doc["tags"].items()):
        click.echo(f"  {k} = {v}")
    if fleet is not None:
        click.echo(_key_table(fleet))


def _key_table(fleet) -> str:
    """Every key, one line each (a fleet of 10,000 keys prints 10,000 lines: pipe it)."""
    head = (f"{'key':<24}{'n_obs':>8}" + "".join(f"{n:>14}" for n in fleet.param_names)
            + f"  {'status':<16}{'source_version':>14}")
    lines = [head]
    for i, key in enumerate(fleet.key_tuples()):
        lines.append(f"{'/'.join(key)[:23]:<24}{int(fleet.n_obs[i]):>8}"
                     + "".join(f"{v:>14.6g}" for v in fleet.params[i])
                     + f"  {str(fleet.status[i])[:15]:<16}"
                     + f"{str(fleet.source_version[i]) or '(this)':>14}")
    return "\n".join(lines)
