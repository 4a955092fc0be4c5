"""``evaluate_fleet_stream``: a fleet rollout's per-key decisions on recorded or simulated rows.

The rows are cut into ticks of ``tick_seconds`` and handed, tick by tick, to the fleet's
per-key e-processes (:class:`~mleops.rollout.kernels.fleet.FleetEvidence`, the code a fleet
controller and judge run): each tick, keys are rolled back or promoted by e-BH across keys
on stopped e-values; the run ends when every key is decided or the rows run out (the
undecided stay on the champion).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mleops.errors import DataError
from mleops.rollout.kernels.fleet import NAMES, FleetConfig, FleetEvidence

DEFAULTS = {"mode": "split", "tick_seconds": 1.0}
COLUMNS = ("time", "request", "arm", "loglik", "key")
MODE_OF = {"split": "unpaired", "shadow": "paired"}


def _config(config: Any) -> tuple[dict, FleetConfig]:
    raw = dict(config or {})
    run = {k: raw.pop(k, v) for k, v in DEFAULTS.items()}
    if run["mode"] not in MODE_OF:
        raise DataError(f"mode must be split or shadow, not {run['mode']!r}")
    if not (isinstance(run["tick_seconds"], int | float) and run["tick_seconds"] > 0):
        raise DataError("tick_seconds must be a positive number")
    known = set(FleetConfig.__dataclass_fields__) - {"mode"}
    if unknown := sorted(set(raw) - known):
        raise DataError(f"unknown fleet rollout config keys {unknown}; known: "
                        f"{sorted(known | set(DEFAULTS))}")
    return run, FleetConfig(mode=MODE_OF[run["mode"]], **raw)


def _columns(rows: Mapping[str, Any] | Any, shadow: bool) -> dict[str, np.ndarray]:
    need = (*COLUMNS, "loglik_champion") if shadow else COLUMNS
    if missing := [c for c in need if c not in rows]:
        raise DataError(f"rows lack column(s) {missing}; a fleet stream has {list(need)}")
    cols = {c: np.asarray(rows[c]) for c in need}
    n = {c: v.shape[0] for c, v in cols.items()}
    if len(set(n.values())) != 1:
        raise DataError(f"columns differ in length: {n}")
    t = cols["time"].astype(float)
    if t.size and (not np.isfinite(t).all() or (np.diff(t) < 0).any()):
        raise DataError("time must be finite and non-decreasing (rows in arrival order)")
    if bad := sorted(set(np.unique(cols["arm"]).tolist()) - {"canary", "champion"}):
        raise DataError(f"arm must be 'canary' or 'champion', got {bad[:5]}")
    for c in ("loglik", *(("loglik_champion",) if shadow else ())):
        v = cols[c].astype(float)
        if not np.isfinite(v).all():
            raise DataError(f"{c} has non-finite values (first at row "
                            f"{int(np.flatnonzero(~np.isfinite(v))[0])})")
        cols[c] = v
    return cols


def evaluate_fleet_stream(rows: Mapping[str, Any] | Any, config: Any = None) -> dict[str, Any]:
    """Per-key decisions of a fleet rollout on ``rows``.

    ``rows``: the columns of :func:`mleops.rollout.evaluate_stream` (``time``, ``request``,
    ``arm``, ``loglik``; ``loglik_champion`` in shadow mode) plus ``key``. ``config``: a dict
    with ``mode`` (split/shadow), ``tick_seconds`` and any :class:`FleetConfig` field
    (``min_drop``, ``fdr``, ``min_rows``, ``min_units``, ``min_blocks``, ``scale_floor``).

    Returns ``keys``: key -> ``{"decision": "rollback" | "promote" | "undecided", "tick",
    "time", "rows_canary", "rows_champion", "e_rollback", "e_promote"}`` (e-values as decided,
    or current for the undecided), ``counts``, ``ticks`` and ``state_bytes``.
    """
    run, cfg = _config(config)
    cols = _columns(rows, run["mode"] == "shadow")
    keys, code = np.unique(cols["key"].astype(str), return_inverse=True)
    ev = FleetEvidence(keys.size, cfg)
    t = cols["time"].astype(float)
    if t.size == 0:
        raise DataError("no rows")
    _, request = np.unique(cols["request"], return_inverse=True)
    tick_of = np.floor((t - t[0]) / float(run["tick_seconds"])).astype(np.int64)
    bounds = np.searchsorted(tick_of, np.arange(tick_of[-1] + 2))
    times = {}
    canary = cols["arm"] == "canary"
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:
            continue
        s = slice(lo, hi)
        decided = ev.tick(code[s], request[s], canary[s], cols["loglik"][s],
                          cols.get("loglik_champion", cols["loglik"])[s])
        for k in decided:
            times[int(k)] = float(t[hi - 1])
        if (ev.a["decision"] != 0).all():
            break
    a = ev.a
    from mleops.rollout.kernels.evidence import log_e

    cur_drop, cur_safe = log_e(cfg.test, a["score"], a["info"])
    und = a["decision"] == 0
    e_drop = np.where(und, cur_drop, a["log_drop"])
    e_safe = np.where(und, cur_safe, a["log_safe"])
    out = {}
    for i, key in enumerate(keys.tolist()):
        out[key] = {"decision": NAMES[int(a["decision"][i])],
                    "tick": int(a["tick"][i]) if a["tick"][i] >= 0 else None,
                    "time": times.get(i), "rows_canary": int(a["n_c"][i]),
                    "rows_champion": int(a["n_p"][i]),
                    "e_rollback": float(math.exp(min(e_drop[i], 700.0))),
                    "e_promote": float(math.exp(min(e_safe[i], 700.0)))}
    return {"keys": out, "counts": ev.counts(), "ticks": ev.ticks, "fdr": cfg.fdr,
            "state_bytes": int(sum(v.nbytes for v in a.values()))}


__all__ = ["evaluate_fleet_stream"]
