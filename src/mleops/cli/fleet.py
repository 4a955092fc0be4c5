"""``mleops fit DATA --key-column K``: one model per key, fitted as a fleet."""

from __future__ import annotations

import json

import click

#: keys the text summary shows
SHOWN = 10


def fit_fleet_cmd(data: str, family: str, keys: list[str], *, column, censor_column,
                  weights_column, threshold, k, method: str, as_json: bool, output,
                  refused: list[str], model_dir: str | None = None,
                  unknown_key: str = "reject", max_memory: str | None = None) -> None:
    """Read DATA, fit ``family`` per key, print a per-key summary (or one JSON document)."""
    from mleops.errors import DataError
    from mleops.fit import fit_fleet
    from mleops.storage import read_arrow

    if refused:
        raise DataError(f"{', '.join(refused)} cannot be combined with --key-column")
    options = {n: v for n, v in (("threshold", threshold), ("k", k)) if v is not None}
    fit_kw = dict(key=keys, column=column, event=censor_column, weights=weights_column,
                  method="newton" if method == "auto" else method, **options)
    if max_memory:  # partitioned by key hash, one partition in memory at a time
        from mleops.batches import parse_size
        from mleops.fleet_stream import fit_fleet_streamed

        if not column:
            raise DataError("--max-memory with --key-column needs --column")
        table = None
        fleet = fit_fleet_streamed(data, family, max_memory=parse_size(max_memory), **fit_kw)
    else:
        table = read_arrow(data).table
        fleet = fit_fleet(table, family, **fit_kw)
    if model_dir:
        save_fleet(fleet, table, model_dir, family=family, column=column, event=censor_column,
                   weights=weights_column, options=options, unknown_key=unknown_key,
                   data=data, max_memory=max_memory)
    doc = fleet.to_dict() if as_json or output else None  # every key
    if output:
        from mleops.storage import write_text

        write_text(output, json.dumps(doc, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(fleet.summary(SHOWN))
        if (bad := len(fleet) - fleet.status_counts().get("converged", 0)):
            click.echo(f"warning: {bad} of {len(fleet)} keys not converged or not fitted "
                       "(see status)", err=True)


def save_fleet(fleet, table, model_dir: str, *, family, column, event, weights, options,
               unknown_key: str, data: str = "", max_memory: str | None = None) -> str:
    """Write the fleet artifact; with ``unknown_key="pooled"`` also fit every key's rows as
    one model, the answer for keys the fleet has no model for (streamed when the fleet
    was)."""
    from mleops.fit import fit
    from mleops.fleet_artifact import FleetArtifact

    pooled = None
    if unknown_key == "pooled" and table is None:
        from mleops.batches import parse_size
        from mleops.columns import fit_table

        pooled = fit_table(data, family, column=column, censor_column=event,
                           weights_column=weights, max_memory=parse_size(max_memory),
                           **options)
    elif unknown_key == "pooled":
        col = lambda name: None if name is None else table.column(name).to_numpy()  # noqa: E731
        if column is None:  # fit_fleet took the only column no role claims
            column = next(c for c in table.column_names
                          if c not in {*fleet.key_names, event, weights})
        pooled = fit(col(column), family, event=col(event), weights=col(weights), **options)
    return FleetArtifact.from_fleet(fleet, pooled=pooled, unknown_key=unknown_key).save(
        model_dir)
