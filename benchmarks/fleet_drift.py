"""Per-key drift of a fleet (``mleops.monitor.fleet_drift``): the false discovery rate of the
keys that alarm, and how many of the drifted keys alarm, over adversarial scenarios.

1,000 keys of Zipf 1.1 popularity (the busiest key sees ~15% of the rows, the rarest a few
hundred), 2,000,000 live rows per repetition fed in 10 chunks (10 looks: alarms are
sticky), windows of 50 rows, a per-key horizon of 10,000 windows, BH at q = 0.05 on
p-values from each key's CUSUM maximum. Scenarios: Gaussian per-row log-likelihoods;
skewed ones (a standardized negative gamma, skewness -2: a long tail of bad rows); 50 keys
drifted by 0.3 baseline sds from the middle of the stream; the same drift on skewed rows; and
rows AR(1)-correlated within each key (rho 0.3), which the pooled serial factor absorbs. Writes
``benchmarks/results/fleet_drift.json``. Usage: ``python benchmarks/fleet_drift.py [--reps N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from _results import write_json
from scipy.signal import lfilter

from mleops.monitor.cusum import CusumConfig
from mleops.monitor.fleet_drift import FleetDrift, KeyBaselines

HERE = os.path.dirname(os.path.abspath(__file__))
K, ROWS, CHUNKS, Q, DRIFTED, SHIFT = 1000, 2_000_000, 10, 0.05, 50, 0.3


def _noise(rng, n: int, kind: str, key: np.ndarray) -> np.ndarray:
    if kind == "skewed":  # mean 0, sd 1, skewness -2: bad rows in a long tail
        return -(rng.gamma(1.0, 1.0, n) - 1.0)
    e = rng.standard_normal(n)
    if kind == "ar1":  # AR(1) within each key, in arrival order
        order = np.argsort(key, kind="stable")
        out = np.empty(n)
        out[order] = lfilter([np.sqrt(1 - 0.09)], [1, -0.3], e[order])
        return out
    return e


def run(reps: int, kind: str, drifted: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, K + 1) ** 1.1
    p /= p.sum()
    fdp, power, busy, any_false = [], [], [], []
    t0 = time.perf_counter()
    for _ in range(reps):
        bad = np.zeros(K, bool)
        bad[rng.choice(K, drifted, replace=False)] = True
        det = FleetDrift(KeyBaselines(np.full(K, -1.0), np.ones(K)),
                         CusumConfig(window=50, horizon=10_000), fdr=Q)
        key = rng.choice(K, ROWS, p=p)
        ll = -1.0 + _noise(rng, ROWS, kind.replace("drift_", ""), key)
        ll -= SHIFT * (bad[key] & (np.arange(ROWS) >= ROWS // 2))
        for part in np.array_split(np.arange(ROWS), CHUNKS):
            det.update(key[part], ll[part])
        alarm = det.a["alarm"] > 0
        fdp.append(float((alarm & ~bad).sum() / max(alarm.sum(), 1)))
        any_false.append(bool((alarm & ~bad).any()))
        if drifted:
            power.append(float(alarm[bad].mean()))
            after = np.bincount(key[ROWS // 2:], minlength=K)  # rows after the change
            if (bad & (after >= 1000)).any():
                busy.append(float(alarm[bad & (after >= 1000)].mean()))
    out = {"kind": kind, "reps": reps, "keys": K, "rows": ROWS, "drifted": drifted,
           "fdr": float(np.mean(fdp)), "p_any_false_alarm": float(np.mean(any_false)),
           "seconds": time.perf_counter() - t0}
    if drifted:
        out["power"] = float(np.mean(power))
        out["power_keys_with_1000_rows_after"] = float(np.mean(busy))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fleet_drift.json"))
    args = ap.parse_args()
    res = {"machine": platform.machine(), "cpus": os.cpu_count(), "q": Q, "shift_sd": SHIFT}
    for i, (kind, drifted) in enumerate((("gaussian", 0), ("skewed", 0), ("gaussian", DRIFTED),
                                         ("skewed", DRIFTED), ("ar1", 0), ("ar1", DRIFTED))):
        r = res[f"{kind}_{drifted}"] = run(args.reps, kind, drifted, seed=i)
        print(f"{kind:9s} {drifted:3d} drifted: FDR {r['fdr']:.3f}, P(any false alarm) "
              f"{r['p_any_false_alarm']:.1%}"
              + (f", drifted keys found {r['power']:.1%} (of those with >= 1,000 rows after "
                 f"the change: {r['power_keys_with_1000_rows_after']:.1%})" if drifted else "")
              + f" ({r['reps']} reps, {r['seconds']:.0f}s)", flush=True)
    write_json(args.out, res)


if __name__ == "__main__":
    main()
