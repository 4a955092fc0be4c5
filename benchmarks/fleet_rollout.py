"""Per-key fleet rollouts (``mleops.rollout.kernels.fleet``): realised FDR, power, rows to a
decision against a per-key oracle, and the cost of a tick over 10,000 keys.

Issue targets: A/A over 1,000 keys with realistic traffic (Zipf 1.1 key popularity, drift
during the ramp, rows correlated within requests): realised FDR of rolled-back keys <= q
over >= 200 repetitions, no key rolled back in >= 95% of them; 20 of 1,000 keys worse by
0.1 nats/row: >= 90% rolled back, the rest promoted; p90 rows per worse key within 2x of a
per-key oracle (a fixed-n one-sided z test at level q with power 0.9, knowing the variance,
no multiplicity correction); controller state for 10,000 keys < 100 MB, a tick < 50 ms.

Each repetition streams ticks of requests (1-3 rows each, a request effect shared by its
rows, a drift both arms share: -0.3 nats over the ramp plus a step at its middle) with the
canary's share ramping 10% -> 25% -> 50%, straight into ``FleetEvidence.tick`` (the code
``evaluate_fleet_stream`` runs per tick). Writes ``benchmarks/results/fleet_rollout.json``.
Usage: ``python benchmarks/fleet_rollout.py [--quick] [--reps N] [--sweep] [--controller]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
from _results import write_json
from scipy import stats

from mleops.rollout.kernels.fleet import FleetConfig, FleetEvidence

HERE = os.path.dirname(os.path.abspath(__file__))
K, N_WORSE, DELTA, Q = 1000, 20, 0.1, 0.05
SD_ROW, SD_REQ = 1.0, 0.3


def _tick(rng, t: int, ticks: int, per_tick: int, p: np.ndarray, bad: np.ndarray):
    keys = rng.choice(p.size, per_tick, p=p)
    size = rng.integers(1, 4, per_tick)
    share = 0.1 if t < ticks // 3 else 0.25 if t < 2 * ticks // 3 else 0.5
    canary = rng.uniform(size=per_tick) < share
    k = np.repeat(keys, size)
    drift = -0.3 * t / ticks - (0.2 if t >= ticks // 2 else 0.0)
    ll = (-1.0 + np.repeat(rng.normal(0, SD_REQ, per_tick), size)
          + rng.normal(0, SD_ROW, k.size) + drift)
    on = np.repeat(canary, size)
    ll = ll - DELTA * (bad[k] & on)
    return k, np.repeat(np.arange(per_tick), size) + t * per_tick, on, ll


VAR_UNIT = SD_REQ ** 2 + SD_ROW ** 2 * (11 / 18)  # a request mean of 1-3 rows: E[1/m]


def _arm_sums(rng, n: np.ndarray, mu: np.ndarray) -> tuple:
    """Exact (requests, sum, sum of squares, rows) of ``n`` Gaussian request means per key:
    the sample mean and the sample variance drawn independently, as they are."""
    sd = np.sqrt(VAR_UNIT)
    mean = mu + sd * rng.standard_normal(n.size) / np.sqrt(np.maximum(n, 1))
    chi = rng.chisquare(np.maximum(n - 1, 1)) * (n >= 2)
    return (n.astype(float), n * mean * (n >= 1), (chi * VAR_UNIT + n * mean * mean) * (n >= 1),
            2.0 * n)


def _sums_tick(rng, t: int, ticks: int, per_tick: int, p: np.ndarray, bad: np.ndarray):
    share = 0.1 if t < ticks // 3 else 0.25 if t < 2 * ticks // 3 else 0.5
    n = rng.poisson(per_tick * p)
    c = rng.binomial(n, share)
    drift = -0.3 * t / ticks - (0.2 if t >= ticks // 2 else 0.0)
    base = -1.0 + drift
    return _arm_sums(rng, c, base - DELTA * bad), _arm_sums(rng, n - c, np.full(p.size, base))


def run(reps: int, worse: int, seed: int, ticks: int, per_tick: int, rows: bool = False
        ) -> dict:
    rng = np.random.default_rng(seed)
    cfg = FleetConfig(min_drop=DELTA, fdr=Q)
    p = 1.0 / np.arange(1, K + 1) ** 1.1
    p /= p.sum()
    fdp, power, any_false, promoted_null, undecided_null, ratio = [], [], [], [], [], []
    t0 = time.perf_counter()
    var_unit = VAR_UNIT
    z = stats.norm.isf(Q) + stats.norm.isf(0.1)
    for _ in range(reps):
        bad = np.zeros(K, bool)
        bad[rng.choice(K, worse, replace=False)] = True
        ev = FleetEvidence(K, cfg)
        for t in range(ticks):
            if rows:  # row by row through tick(), request ids and all
                ev.tick(*_tick(rng, t, ticks, per_tick, p, bad))
            else:  # the same kernel from each tick's per-key sufficient statistics
                ev.update(*_sums_tick(rng, t, ticks, per_tick, p, bad))
            if (ev.a["decision"] != 0).all():
                break
        d = ev.a["decision"]
        back = d == 1
        fdp.append(float((back & ~bad).sum() / max(back.sum(), 1)))
        any_false.append(bool((back & ~bad).any()))
        promoted_null.append(float((d[~bad] == 2).mean()))
        undecided_null.append(float((d[~bad] == 0).mean()))
        if worse:
            power.append(float(back[bad].mean()))
            # oracle: canary requests a fixed-n z test needs at this key's arm ratio
            u_c, u_p = ev.a["u_c"][bad & back], ev.a["u_p"][bad & back]
            oracle = z * z * var_unit * (1 + u_c / np.maximum(u_p, 1)) / DELTA ** 2
            ratio += (u_c / oracle).tolist()
    out = {"reps": reps, "keys": K, "worse": worse, "ticks": ticks, "requests_per_tick": per_tick,
           "input": "rows" if rows else "per-key sums",
           "fdr": float(np.mean(fdp)), "p_any_false_rollback": float(np.mean(any_false)),
           "p_no_false_rollback": 1 - float(np.mean(any_false)),
           "null_promoted_share": float(np.mean(promoted_null)),
           "null_undecided_share": float(np.mean(undecided_null)),
           "seconds": time.perf_counter() - t0}
    if worse:
        out.update(power=float(np.mean(power)),
                   p90_rows_over_oracle=float(np.quantile(ratio, 0.9)) if ratio else None,
                   median_rows_over_oracle=float(np.median(ratio)) if ratio else None)
    return out


def tick_cost(keys: int = 10_000, rows_per_tick: int = 20_000) -> dict:
    """Wall time of one tick over ``keys`` keys and the state's size."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, keys + 1) ** 1.1
    p /= p.sum()
    ev = FleetEvidence(keys, FleetConfig(min_drop=DELTA, fdr=Q))
    bad = np.zeros(keys, bool)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for t in range(40):
        args = _tick(rng, t, 40, rows_per_tick // 2, p, bad)
        s = time.perf_counter()
        ev.tick(*args)
        times.append(time.perf_counter() - s)
    state = sum(v.nbytes for v in ev.a.values())
    return {"keys": keys, "rows_per_tick": int(rows_per_tick), "tick_ms_median":
            1e3 * float(np.median(times[5:])), "tick_ms_max": 1e3 * float(np.max(times[5:])),
            "state_bytes": int(state), "state_json_bytes": len(str(ev.to_dict())),
            "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024}


def controller_cost(keys: int = 10_000, ticks: int = 20) -> dict:
    """The live controller's tick over ``keys`` keys: read a server's counters (a KeyTally's
    JSON snapshot, as the HTTP endpoint serves it), write-ahead, apply, save, route."""
    import json
    import tempfile

    from mleops.rollout.control.fleet_controller import FleetRollout
    from mleops.serving.fleet_tally import KeyTally

    class Server:  # the HTTP read without the socket: the same JSON parse (the server
        def __init__(self, tally):  # encodes its snapshot in its own process, untimed here)
            self.tally, self.routed, self.body = tally, None, "{}"

        def read(self, n_keys, version):
            return json.loads(self.body)

        def route(self, routing):
            self.routed = routing

    rng = np.random.default_rng(0)
    tally = KeyTally(keys, "2")
    server = Server(tally)
    with tempfile.TemporaryDirectory() as tmp:
        ctl = FleetRollout(tmp, "bench", server=server)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        st = ctl.start(champion_version="1", candidate_version="2",
                       labels=[f"k{i}" for i in range(keys)], evidence_url="-",
                       routing_path="-", config=FleetConfig(min_drop=DELTA, fdr=Q),
                       steps=[10, 25, 50], ticks_per_step=10, max_ticks=10_000)
        times = []
        for _ in range(ticks):
            k = rng.integers(0, keys, 20_000)
            tally.add(rng.integers(0, 2, k.size), k, rng.normal(-1.0, 1.0, k.size))
            server.body = json.dumps(tally.snapshot())
            t0 = time.perf_counter()
            st = ctl.tick(st)
            times.append(time.perf_counter() - t0)
        size = os.path.getsize(ctl.path)
    return {"keys": keys, "tick_ms_median": 1e3 * float(np.median(times)),
            "tick_ms_max": 1e3 * float(np.max(times)), "state_file_bytes": size,
            "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024}


def sweep(reps: int, out: str) -> None:
    """Power and rows-to-decision against traffic: the tail keys of a Zipf fleet see too
    few requests in 1,000 ticks of 20,000; how much traffic makes 90% of worse keys decide."""
    import json

    res = json.load(open(out)) if os.path.exists(out) else {}
    rows = []
    for per_tick in (20_000, 50_000, 100_000, 200_000):
        r = run(reps, N_WORSE, 5, 1000, per_tick)
        rows.append(r)
        print(f"sweep {per_tick:>7} requests/tick ({1000 * per_tick / 1e6:.0f}M in all), "
              f"{reps} reps: worse rolled back {r['power']:.1%}, FDR {r['fdr']:.3f}, no false "
              f"rollback {r['p_no_false_rollback']:.1%}, null promoted "
              f"{r['null_promoted_share']:.1%}, p90 / oracle {r['p90_rows_over_oracle']:.2f} "
              f"(median {r['median_rows_over_oracle']:.2f}) ({r['seconds']:.0f}s)", flush=True)
    res["traffic_sweep"] = rows
    write_json(out, res)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20 repetitions, shorter rollouts")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fleet_rollout.json"))
    ap.add_argument("--controller", action="store_true", help="only the live controller's "
                    "tick over 10,000 keys, merged into --out")
    ap.add_argument("--sweep", action="store_true", help="only the traffic sweep (20 worse "
                    "keys at 20k..200k requests per tick), merged into --out")
    args = ap.parse_args()
    if args.sweep:
        return sweep(args.reps or 50, args.out)
    if args.controller:
        import json

        res = json.load(open(args.out)) if os.path.exists(args.out) else {}
        c = res["controller"] = controller_cost()
        print(f"controller tick over {c['keys']} keys (read, write-ahead, apply, save, route): "
              f"median {c['tick_ms_median']:.1f} ms (max {c['tick_ms_max']:.1f}); state file "
              f"{c['state_file_bytes'] / 1e6:.2f} MB; RSS growth {c['rss_growth_mb']:.1f} MB")
        return write_json(args.out, res)
    reps = args.reps or (20 if args.quick else 200)
    ticks, per_tick = (300, 10_000) if args.quick else (1000, 20_000)
    res = {"machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg(),
           "q": Q, "delta": DELTA}
    for name, worse, seed, rows in (("aa_rows", 0, 3, True), ("aa", 0, 1, False),
                                    ("worse_rows", N_WORSE, 4, True),
                                    ("worse", N_WORSE, 2, False)):
        n_reps = max(2, reps // 20) if rows else reps
        r = res[name] = run(n_reps, worse, seed, 200 if rows else ticks,
                            3000 if rows else per_tick, rows=rows)
        line = (f"{name:10s} {K} keys, {r['reps']} reps ({r['input']}, {r['ticks']} ticks x "
                f"{r['requests_per_tick']} requests): FDR {r['fdr']:.3f}; no false rollback in "
                f"{r['p_no_false_rollback']:.1%}; null keys promoted "
                f"{r['null_promoted_share']:.1%}, undecided {r['null_undecided_share']:.1%}")
        if worse:
            line += (f"; worse keys rolled back {r['power']:.1%}, canary requests / oracle p90 "
                     f"{r['p90_rows_over_oracle'] or float('nan'):.2f} (median "
                     f"{r['median_rows_over_oracle'] or float('nan'):.2f})")
        print(line + f" ({r['seconds']:.0f}s)", flush=True)
    res["tick"] = tick_cost()
    t = res["tick"]
    print(f"tick over {t['keys']} keys, {t['rows_per_tick']} rows: median "
          f"{t['tick_ms_median']:.1f} ms (max {t['tick_ms_max']:.1f}); state "
          f"{t['state_bytes'] / 1e6:.2f} MB (JSON {t['state_json_bytes'] / 1e6:.2f} MB)")
    write_json(args.out, res)


if __name__ == "__main__":
    main()
