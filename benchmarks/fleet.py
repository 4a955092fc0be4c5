"""Time ``mleops.fit_fleet`` on a keyed table of censored Weibull rows against a loop of
lifelines ``WeibullFitter`` fits, one per key, on the same data in the same run.

The loop is timed on a subset of keys and scaled linearly to the whole fleet (stated in the
output: ``lifelines_scaled_from_keys``); per-key estimates are compared on that subset.
Writes ``benchmarks/results/fleet.json``. Usage: ``python benchmarks/fleet.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
from _results import write_json

os.environ.setdefault("MLEOPS_JAX_CACHE", "off")  # in-process timings: compile measured apart

import jax  # noqa: E402
import pandas as pd  # noqa: E402

import mleops  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def table(keys: int, rows: int, seed: int = 6) -> pd.DataFrame:
    """``keys`` keys of ``rows`` rows each: Weibull times (per-key shape and scale),
    right-censored by a uniform follow-up, rows shuffled."""
    rng = np.random.default_rng(seed)
    shape = np.repeat(rng.uniform(0.8, 2.5, keys), rows)
    scale = np.repeat(rng.uniform(1.0, 10.0, keys), rows)
    t = scale * rng.weibull(shape)
    c = rng.uniform(0.5, 3.0, keys * rows) * scale
    df = pd.DataFrame({"key": np.repeat(np.arange(keys), rows), "x": np.minimum(t, c),
                       "e": (t <= c).astype(np.int8)})
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def bench(keys: int, rows: int, subset: int, repeat: int) -> dict:
    import lifelines

    df = table(keys, rows)
    run = lambda: mleops.fit_fleet(df, "weibull", key="key", column="x", event="e")  # noqa: E731
    t0 = time.perf_counter()
    fleet = run()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fleet = run()
        warm.append(time.perf_counter() - t0)
    groups = {k: g for k, g in df.groupby("key") if k < subset}
    t0 = time.perf_counter()
    ref = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, g in groups.items():
            ref[k] = lifelines.WeibullFitter().fit(g.x.to_numpy(), g.e.to_numpy())
    t_sub = time.perf_counter() - t0
    scaled = t_sub * keys / subset
    ours = np.array([[fleet[k]["params"]["shape"], fleet[k]["params"]["scale"]]
                     for k in ref])
    theirs = np.array([[f.rho_, f.lambda_] for f in ref.values()])
    ll_ours = np.array([fleet[k]["loglik"] for k in ref])
    ll_ref = np.array([f.log_likelihood_ for f in ref.values()])
    best = min(warm)
    out = {"keys": keys, "rows_per_key": rows, "rows": keys * rows,
           "censored_share": float(1 - df.e.mean()),
           "fit_fleet_first_call_s": first, "fit_fleet_warm_s": best,
           "fit_fleet_warm_runs_s": warm, "compiled_shapes": sorted(set(fleet.shapes)),
           "status_counts": fleet.status_counts(),
           "lifelines_subset_keys": subset, "lifelines_subset_s": t_sub,
           "lifelines_scaled_from_keys": f"{subset} keys timed, x {keys / subset:g} (linear)",
           "lifelines_scaled_s": scaled, "ratio_warm": scaled / best,
           "ratio_first_call": scaled / first,
           "params_max_rel_diff": float(np.max(np.abs(ours / theirs - 1))),
           "loglik_max_rel_diff": float(np.max(np.abs(ll_ours / ll_ref - 1))),
           "loglik_at_least_as_good": bool((ll_ours >= ll_ref - 1e-9 * np.abs(ll_ref)).all())}
    print(f"fleet {keys} keys x {rows} censored weibull rows: fit_fleet {best:.3f}s warm "
          f"({first:.2f}s first call, compile included); lifelines loop {t_sub:.2f}s on "
          f"{subset} keys -> {scaled:.1f}s scaled to {keys}: {scaled / best:.0f}x warm, "
          f"{scaled / first:.1f}x first call; params max rel diff "
          f"{out['params_max_rel_diff']:.1e}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2,000 keys x 1,000 rows")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fleet.json"))
    a = ap.parse_args()
    keys, rows, subset, rep = (2_000, 1_000, 100, 3) if a.quick else (10_000, 1_000, 200, 3)
    res = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]},
           "quick": a.quick, "fleet": bench(keys, rows, subset, rep)}
    write_json(a.out, res)


if __name__ == "__main__":
    main()
