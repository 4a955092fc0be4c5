"""The pipeline's steps for a fleet (``--key-column``): one model per key, one version.

The same tasks as for one model, each taking the fleet's branch when its input is keyed:
train fits every key in one call (:func:`mleops.fit_fleet`) and writes a fleet artifact;
evaluate scores the held-out rows under the candidate's and the champion fleet's key models
(one keyed kernel each) and calibrates every key; gate decides key by key with false
discovery control across keys (:func:`mleops.gate.decide_fleet`); record registers the
merge (:func:`mleops.fleet_merge.merge_fleets`): keys found worse keep the champion's
parameters and lineage, the others move, new keys enter when calibrated.

Held-out rows of a key the candidate has no model for (too few training rows, not
converged) cannot be scored: they are counted and named in the evaluation, and such a key
keeps the champion's parameters (or, new, stays out) through the merge.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np

from mleops.errors import DataError
from mleops.fleet_artifact import HEADER, FleetArtifact, key_labels

KEYS_FILE = "keys.npy"
NAMED = 20  # unscored keys named in the evaluation


def is_fleet(model_dir: str) -> bool:
    return os.path.exists(os.path.join(model_dir, HEADER))


def train_fleet(t, model_dir: str, *, family: str, options: dict, method: str,
                meta: dict) -> FleetArtifact:
    """Fit every key of the table ``t`` (a pipeline Table with keys) and save the fleet."""
    from mleops.fit import fit_fleet

    cols = {**dict(zip(t.key_names, t.keys)), "mleops.x": t.x}
    roles = {}
    for role, values in (("event", t.event), ("weights", t.weight)):
        if values is not None:
            cols[f"mleops.{role}"] = values
            roles[role] = f"mleops.{role}"
    fleet = fit_fleet(cols, family, key=list(t.key_names), column="mleops.x",
                      method="newton" if method == "auto" else method, **roles, **options)
    art = FleetArtifact.from_fleet(fleet, data_hash=meta.get("data_hash", ""), n_train=t.n,
                                   source=meta.get("source", ""))
    art.save(model_dir)
    return art


def fleet_metrics(art: FleetArtifact) -> dict[str, float]:
    servable = art.servable
    return {"train_loglik": float(np.nansum(art.loglik[servable])), "train_n": float(
        art.n_obs.sum()), "fleet_keys": float(len(art)), "fleet_keys_fitted": float(
        servable.sum()), "fit_converged": float(servable.all())}


def _scores(art: FleetArtifact, held, at: np.ndarray, keep: np.ndarray) -> np.ndarray:
    from mleops.fleet_kernel import keyed_loglik

    event = None if held.event is None else held.event[keep]
    return keyed_loglik(art.family, art.params[at[keep]], held.x[keep], event=event)


def evaluate_fleet(model_dir: str, held, out_dir: str, *, tracking_uri: str,
                   model_name: str, seed: int, scores_file: str, calib_file: str) -> dict:
    """Per-row held-out scores of the candidate and champion fleets, per-key calibration."""
    from mleops.gate.calibration import summary_metrics
    from mleops.gate.fleet_calibration import fleet_calibration

    art = FleetArtifact.load(model_dir)
    if not held.keys:
        raise DataError(f"the held-out rows carry no key columns {art.key_names}")
    at = art.positions(list(held.keys))
    keep = at >= 0
    if not keep.any():
        raise DataError("no held-out row belongs to a key the candidate fleet has a model for")
    keys = [k[keep] for k in held.keys]
    cand = _scores(art, held, at, keep)
    calib = fleet_calibration(art, held.x[keep], keys, seed=seed,
                              event=None if held.event is None else held.event[keep])
    champ, champ_version = None, ""
    if model_name:
        from mleops.registry import NotAFleet, Registry

        reg = Registry(tracking_uri or None)
        try:
            found = reg.load_fleet(model_name)
        except NotAFleet:
            raise DataError(f"the champion of {model_name!r} is a single model, the candidate "
                            f"a fleet: not comparable (register the fleet under another "
                            f"name)") from None
        if found is not None:
            champ_version, champion = found
            if champion.key_names != art.key_names or champion.family != art.family:
                raise DataError(f"champion v{champ_version} is a {champion.family['name']} "
                                f"fleet by {champion.key_names}, the candidate a "
                                f"{art.family['name']} fleet by {art.key_names}: not "
                                f"comparable")
            cat = champion.positions(keys)
            champ = np.full(cand.size, np.nan)  # NaN: a key the champion has no model for
            sub = held.take(np.flatnonzero(keep))
            has = cat >= 0
            champ[has] = _scores(champion, sub, cat, has)
    os.makedirs(out_dir, exist_ok=True)
    arrays = {"candidate": cand, "keys": key_labels(keys)}
    if champ is not None:
        arrays["champion"] = champ
    np.savez(os.path.join(out_dir, scores_file), **arrays)
    unscored = sorted(set(key_labels([k[~keep] for k in held.keys]).tolist()))
    metrics = summary_metrics(cand, None)
    metrics.update(fleet_heldout_keys=float(len(calib)), fleet_unscored_rows=float(
        (~keep).sum()))
    info = {"fleet": True, "calibration": calib, "champion_version": champ_version,
            "metrics": metrics, "unscored_rows": int((~keep).sum()),
            "unscored_keys": unscored[:NAMED], "n_unscored_keys": len(unscored)}
    with open(os.path.join(out_dir, calib_file), "w") as f:
        json.dump(info, f)
    return info


def gate_fleet(cand, champ, keys, info: dict, decision_dir: str, report_html: str, *,
               config, fdr: float, decision_file: str) -> dict:
    """Key-by-key decision, FDR-controlled across keys; decision.json and an HTML table."""
    from mleops.gate import FleetGateConfig, decide_fleet

    d = decide_fleet(cand, champ, keys, info["calibration"],
                     FleetGateConfig(gate=config, fdr=fdr))
    c = d.counts
    reasons = [f"fleet: {c['keys']} keys with held-out rows, {c['tested']} tested against "
               f"champion {info.get('champion_version') or 'none'}; {c['discoveries']} found "
               f"worse ({d.method} at FDR {d.fdr:g}) keep the champion",
               f"{c['take_candidate']} keys take the candidate, {c['take_champion']} keep the "
               f"champion, {c['new_keys']} new ({c['excluded']} excluded: calibration fails)"]
    if info.get("n_unscored_keys"):
        reasons.append(f"{info['n_unscored_keys']} keys ({info['unscored_rows']} held-out "
                       f"rows) have no candidate model and were not scored, e.g. "
                       f"{info['unscored_keys'][:5]}")
    out = {**d.to_dict(), "fleet": True, "reasons": reasons,
           "outcome": "passed" if d.passed else "rejected",
           "stats": {**c, "fdr": d.fdr}, "champion_version": info.get("champion_version", ""),
           "config": asdict(config)}
    os.makedirs(decision_dir, exist_ok=True)
    with open(os.path.join(decision_dir, decision_file), "w") as f:
        json.dump(out, f)
    _report(d, reasons, report_html)
    return out


def _report(d, reasons: list[str], path: str) -> None:
    import html

    t = d.table
    worst = t.sort_values("mean_diff").head(50)
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{r.n}</td><td>{r.mean_diff:+.4g}"
                   f"</td><td>{r.e_value:.3g}</td><td>{r.take}</td><td>{html.escape(r.reason)}"
                   f"</td></tr>" for k, r in worst.iterrows())
    body = (f"<h1>mleops fleet gate: {'PASSED' if d.passed else 'REJECTED'}</h1><ul>"
            + "".join(f"<li>{html.escape(r)}</li>" for r in reasons) + "</ul>"
            "<h2>50 keys with the lowest mean difference</h2><table border=1><tr><th>key</th>"
            "<th>rows</th><th>mean diff</th><th>e-value</th><th>take</th><th>reason</th></tr>"
            + rows + "</table>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"<!doctype html><meta charset=utf-8><title>fleet gate</title>{body}")


def fleet_version(registry, name: str, version: str) -> FleetArtifact:
    """A registered fleet version, or DataError naming it when it is gone."""
    found = registry.load_fleet(name, version)
    if found is None:
        raise DataError(f"model {name!r} has no version {version}")
    return found[1]


def merged_fleet(model_dir: str, decision: dict, registry, model_name: str
                 ) -> FleetArtifact:
    """What a passed fleet registers: the candidate merged with the champion it was gated
    against, key by key as the gate decided."""
    return merge_against(FleetArtifact.load(model_dir), decision, registry, model_name)


def merge_against(art: FleetArtifact, decision: dict, registry, model_name: str
                  ) -> FleetArtifact:
    """``art`` merged, key by key as a passed (re-)gate ``decision`` says, with the
    champion that decision names."""
    from mleops.fleet_merge import merge_fleets

    version = decision.get("champion_version", "")
    champion = fleet_version(registry, model_name, version) if version else None
    take = {str(r["key"]): r["take"] for r in decision.get("keys", [])}
    return merge_fleets(art, champion, take, champion_version=version)


__all__ = ["evaluate_fleet", "fleet_metrics", "fleet_version", "gate_fleet", "is_fleet",
           "merge_against", "merged_fleet",
           "train_fleet"]
