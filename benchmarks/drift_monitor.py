"""Drift CUSUM under serially correlated live rows: false alarms over the horizon and windows
to alarm after a 1.6x latency slowdown, against the stated false-alarm probability.

Rows: a lognormal latency model's per-row log-likelihood (sd 0.8 nats), AR(1) in arrival order
(rho 0 / 0.5 / 0.8 / 0.9), windows of 100 rows, horizon 1,000 windows, ``false_alarm`` 0.01. The
slowdown multiplies latencies by 1.6, which lowers the log-likelihood by log(1.6) = 0.47 nats
per row at least (more when the model's sigma is small): the conservative end is simulated.
Usage: python benchmarks/drift_monitor.py [--reps 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _results import write_json
from scipy import signal, stats

from mleops.monitor import Baseline, CusumConfig, CusumDetector

HERE = os.path.dirname(os.path.abspath(__file__))
WINDOW, HORIZON, SD, DROP = 100, 1000, 0.8, float(np.log(1.6))


def ar_rows(rng, n: int, rho: float) -> np.ndarray:
    e = rng.standard_normal(n)
    if not rho:
        return e
    rest = signal.lfilter([np.sqrt(1 - rho ** 2)], [1.0, -rho], e[1:], zi=[rho * e[0]])[0]
    return np.concatenate([e[:1], rest])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "drift_monitor.json"))
    a = ap.parse_args()
    rng, base, t0, out = np.random.default_rng(a.seed), Baseline(-1.0, SD, 5000), time.time(), []
    cfg = CusumConfig(horizon=HORIZON, window=WINDOW, false_alarm=0.01)
    for rho in (0.0, 0.5, 0.8, 0.9):
        alarms = 0
        for _ in range(a.reps):
            det = CusumDetector(base, cfg)
            det.update_rows(-1.0 + SD * ar_rows(rng, WINDOW * HORIZON, rho))
            alarms += det.alarm
        delays = []
        for _ in range(a.reps):
            det = CusumDetector(base, cfg)
            det.update_rows(-1.0 + SD * ar_rows(rng, 20 * WINDOW, rho))
            det.update_rows(-1.0 - DROP + SD * ar_rows(rng, 30 * WINDOW, rho))
            delays.append(det.state.alarm_window - 19 if det.alarm else np.inf)
        up = float(stats.beta.ppf(0.975, alarms + 1, a.reps - alarms))
        p90 = float(np.percentile(delays, 90))
        row = {"rho": rho, "false_alarm_rate": alarms / a.reps, "false_alarm_upper95": up,
               "p90_windows_to_alarm": p90, "max_windows_to_alarm": float(np.max(delays)),
               "target_false_alarm_met": alarms / a.reps <= 0.01,
               "target_5_windows_met": p90 <= 5}
        out.append(row)
        print(f"AR(1) rho {rho:.1f}: false alarms {alarms / a.reps:.2%} (95% up {up:.2%}) over "
              f"{HORIZON} windows; 1.6x slowdown alarms in p90 {p90:.0f} windows "
              f"(max {row['max_windows_to_alarm']:.0f})", flush=True)
    write_json(a.out, {"reps": a.reps, "seed": a.seed, "window": WINDOW, "horizon": HORIZON,
                       "seconds": round(time.time() - t0, 1), "results": out})


if __name__ == "__main__":
    main()
