"""``mleops monitor`` on a fleet: per-key drift (:mod:`.fleet_drift`) on live rows that carry
their key, and ``--on-drift retrain`` for the alarmed keys only.

Prometheus series stay per fleet (bounded labels), so per-key drift reads rows (``--data``):
the per-key evidence lives in the monitor's state file, O(keys) numbers. The retrain refits
the alarmed keys on their live rows and registers one fleet version merging their new
parameters into the champion's table (every other key keeps the champion's, with its
lineage); it becomes the challenger, for the fleet gate or a fleet rollout to decide.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from mleops.atomic import write_json_atomic
from mleops.errors import DataError
from mleops.fleet_artifact import FleetArtifact, key_labels
from mleops.io import read_arrow
from mleops.monitor.cusum import CusumConfig
from mleops.monitor.fleet_drift import FleetDrift, KeyBaselines

LEVELS = (np.arange(400) + 0.5) / 400  # quadrature of the model-implied baseline


def model_baselines(art: FleetArtifact) -> KeyBaselines:
    """Each key's mean and sd of log-likelihood under its own model (midpoint quadrature
    over 400 quantiles): exact for a well-specified model, needs no held-out rows."""
    from mleops.fleet_kernel import keyed_loglik, keyed_ppf

    ok = np.flatnonzero(art.servable)
    params = art.row_params(ok)
    x = keyed_ppf(art.family, params, LEVELS)
    ll = keyed_loglik(art.family, np.repeat(params, LEVELS.size, axis=0), x.ravel()).reshape(
        x.shape)
    mean, sd = np.full(len(art), -1.0), np.ones(len(art))
    good = np.isfinite(ll).all(axis=1)
    mean[ok[good]], sd[ok[good]] = ll[good].mean(axis=1), ll[good].std(axis=1)
    return KeyBaselines(mean, np.maximum(sd, 1e-9), None, "model-implied per key (quadrature)")


def data_baselines(art: FleetArtifact, path: str, column: str) -> KeyBaselines:
    """Per key: held-out rows' mean and sd (keys with < 2 such rows: model-implied)."""
    at, x, keys = rows_of(art, path, column)
    ll = art.loglik_rows(x[at >= 0], [k[at >= 0] for k in keys])
    at = at[at >= 0]
    n = np.bincount(at, minlength=len(art)).astype(float)
    s, ss = (np.bincount(at, weights=w, minlength=len(art)) for w in (ll, ll * ll))
    have = n >= 2
    model = model_baselines(art)
    mean = np.where(have, s / np.maximum(n, 1), model.mean)
    var = np.where(have, (ss - s * s / np.maximum(n, 1)) / np.maximum(n - 1, 1), model.sd ** 2)
    return KeyBaselines(mean, np.sqrt(np.maximum(var, 1e-18)), np.where(have, n, 1e12),
                        f"held-out rows per key in {path} ({int(have.sum())} keys)")


def _keys(art: FleetArtifact, table) -> list[np.ndarray]:
    if missing := [k for k in art.key_names if k not in table.column_names]:
        raise DataError(f"rows lack the fleet's key column(s) {missing}")
    return [np.asarray(table.column(k).to_pylist(), dtype=object) for k in art.key_names]


def rows_of(art: FleetArtifact, path: str, column: str
            ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(key index per row, -1 for keys the fleet lacks; x; key columns) of ``path``."""
    table = read_arrow(path).table
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    numeric = [c for c in table.column_names if c not in art.key_names]
    col = column or (numeric[0] if len(numeric) == 1 else "")
    if col not in table.column_names:
        raise DataError(f"name the response column (--column): {numeric}")
    keys = _keys(art, table)
    x = np.asarray(table.column(col).to_numpy(zero_copy_only=False), float)
    at = art.positions(keys)
    at[at >= 0] = np.where(art.servable[at[at >= 0]], at[at >= 0], -1)
    return at, x, keys


def fleet_champion(req) -> tuple[str, FleetArtifact, Any] | None:
    """(version, table, registry or None) when the watched model is a fleet, else None."""
    from mleops.fleet_artifact import HEADER

    if req.model_dir:
        if not os.path.exists(os.path.join(req.model_dir, HEADER)):
            return None
        from mleops.serving.service import read_serving_info

        version = str(read_serving_info(req.model_dir).get("version", "")) or "local"
        return version, FleetArtifact.load(req.model_dir), None
    from mleops.registry import Registry

    reg = Registry(req.tracking_uri or None)
    v = next((v for v in reg.list_versions(req.name) if req.alias in v["aliases"]), None)
    if v is None or "mleops.fleet.key_columns" not in v["tags"]:
        return None
    found = reg.load_fleet(req.name, v["version"])
    if found is None:
        raise DataError(f"fleet {req.name!r} version {v['version']} is gone")
    return found[0], found[1], reg


def run_fleet_monitor(req, art: FleetArtifact, version: str, reg=None, *,
                      retrain: bool = False) -> dict[str, Any]:
    """One monitoring run of a fleet on ``req.data_path`` (a :class:`.check.MonitorRequest`,
    ``req.fdr`` across keys), resumed from and saved to ``req.state_path``; ``retrain``:
    refit the alarmed keys into a new version (:func:`retrain_keys`)."""
    if not req.data_path:
        raise DataError("per-key drift reads rows with their keys: give --data (Prometheus "
                        "series are per fleet, not per key)")
    at, x, keys = rows_of(art, req.data_path, req.column)
    ok = at >= 0
    ll = np.full(x.size, np.nan)
    ll[ok] = art.loglik_rows(x[ok], [k[ok] for k in keys])
    model_key = {"name": req.name, "version": version, "fleet": True}
    det = None
    if req.state_path and os.path.exists(req.state_path):
        with open(req.state_path) as f:
            saved = json.load(f)
        if saved.get("model") == model_key:
            det = FleetDrift.from_dict(saved["detector"])
    if det is None:
        base = (data_baselines(art, req.baseline_data, req.column) if req.baseline_data
                else model_baselines(art))
        # the horizon is per key, in windows: by default 10x the busiest key's in these rows
        busiest = int(np.bincount(at[ok]).max()) // req.window if ok.any() else 0
        det = FleetDrift(base, CusumConfig(horizon=req.horizon or max(1000, 10 * busiest),
                                           window=req.window, min_rows=req.min_rows),
                         fdr=req.fdr)
    det.update(at, ll)
    if req.state_path:
        os.makedirs(os.path.dirname(os.path.abspath(req.state_path)), exist_ok=True)
        write_json_atomic(req.state_path, {"model": model_key, "detector": det.to_dict()})
    labels = key_labels(art.keys).tolist()
    out = {"model": req.name, "version": version, "fleet": True,
           "unknown_key_rows": int((~ok).sum()), **det.report(labels)}
    if out["alarm"] and retrain:
        if reg is None:
            raise DataError("--on-drift retrain of a fleet needs the registry (not --model-dir)")
        out["retrain"] = retrain_keys(reg, req.name, version, art, det.alarmed, keys, x)
    return out


def retrain_keys(reg, name: str, version: str, art: FleetArtifact, alarmed: np.ndarray,
                 keys: list[np.ndarray], x: np.ndarray) -> dict[str, Any]:
    """Refit the alarmed keys on their live rows; register the champion's table with those
    keys' parameters replaced (one version, the challenger)."""
    import pandas as pd

    import mleops
    from mleops.fleet_merge import merge_fleets

    want = set(key_labels([k[alarmed] for k in art.keys]).tolist())
    rows = np.isin(key_labels(keys), list(want))
    df = pd.DataFrame({**{n: k[rows] for n, k in zip(art.key_names, keys)}, "_x": x[rows]})
    fam = {k: v for k, v in art.family.items() if k in ("threshold", "k") and v is not None}
    refit = FleetArtifact.from_fleet(mleops.fit_fleet(df, art.family["name"],
                                                      key=art.key_names, column="_x", **fam))
    fitted = set(key_labels(refit.keys)[refit.servable].tolist())
    take = {k: "candidate" if k in fitted else "champion"
            for k in key_labels(art.keys).tolist()}
    merged = merge_fleets(refit, art, take, champion_version=version)
    tags = {"mleops.retrained_from": str(version), "mleops.retrained_keys": str(len(fitted)),
            **merged.digests()}
    run = reg.log_fleet_run(experiment=name, params={"retrain_of": version},
                            metrics={"keys_retrained": float(len(fitted))}, fleet=merged,
                            tags=tags, registered=True)
    new = reg.register(name, run, tags=tags)
    return {"registered_version": str(new), "keys_retrained": sorted(fitted),
            "keys_not_fitted": sorted(want - fitted)}


__all__ = ["data_baselines", "fleet_champion", "model_baselines", "retrain_keys", "rows_of", "run_fleet_monitor"]
