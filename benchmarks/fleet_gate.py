"""Realised FDR and power of the fleet gate (``mleops.gate.decide_fleet``), e-BH and BH.

Issue targets: A/A over 1,000 keys, realised FDR of "worse" discoveries <= q over >= 200
repetitions; 50 of 1,000 keys worse by 0.05 nats/row with 2,000 held-out rows each: >= 90%
of them found. Scenarios simulate per-row differences d = candidate - champion directly,
adversarially: every null key sits ON the null boundary mean(d) = -tolerance (harder than
A/A, where an equally good refit sits a tolerance above it), with skewed / heavy-tailed
rows, rows correlated within a key (AR(1)), and Zipf-unequal key sizes. One scenario scores
real fits: per key, gamma MLEs (numpy Newton, checked against ``mleops.fit``) for the champion
and an equally good refit on disjoint training rows, the 50 worse keys refitted on rows whose
scale drifted; null / worse is decided by the exact (closed-form) expected difference.

Each repetition runs ``decide_fleet`` once (method e-bh); the BH discoveries are ``bh`` on the
same table's p-values (what ``method="bh"`` does). FDR = mean over repetitions of
FDP = false discoveries / max(discoveries, 1). Writes ``benchmarks/results/fleet_gate.json``.
Usage: ``python benchmarks/fleet_gate.py [--quick] [--reps N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from _results import write_json
from scipy import optimize, special, stats

from mleops.gate import FleetGateConfig, GateConfig, bh, decide_fleet
from mleops.gate.calibration import pit_summary

HERE = os.path.dirname(os.path.abspath(__file__))
K, N, N_WORSE, DELTA, Q = 1000, 2000, 50, 0.05, 0.05
TOL = GateConfig().tolerance


def _noise(rng, kind: str, shape) -> np.ndarray:
    """Unit-variance, mean-zero row noise of the named kind (rows along the last axis)."""
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "lognormal":  # skew 6.2, long tail towards "candidate much better on a row"
        s = 1.0
        x = rng.lognormal(0.0, s, shape)
        return (x - np.exp(s * s / 2)) / np.sqrt((np.exp(s * s) - 1) * np.exp(s * s))
    if kind == "t3":  # infinite kurtosis
        return rng.standard_t(3, shape) / np.sqrt(3.0)
    if kind.startswith("ar1"):  # Gaussian AR(1), phi = 0.5, stationary unit variance
        from scipy.signal import lfilter
        phi = 0.5
        e = rng.standard_normal(shape) * np.sqrt(1 - phi * phi)
        e[..., 0] /= np.sqrt(1 - phi * phi)
        return lfilter([1.0], [1.0, -phi], e, axis=-1)
    raise ValueError(kind)


def _sizes(kind: str, rng) -> np.ndarray:
    if kind == "equal":
        return np.full(K, N)
    w = 1.0 / np.arange(1, K + 1) ** 1.1  # Zipf popularity, same total rows as equal
    n = np.maximum(np.round(w / w.sum() * K * N).astype(int), 5)
    return rng.permutation(n)


SCENARIOS = {  # name: (noise, sd of d, key sizes, batch)
    "gaussian_sd0.3": ("gaussian", 0.3, "equal", 1),
    "lognormal_skew_sd0.3": ("lognormal", 0.3, "equal", 1),
    "t3_sd0.3": ("t3", 0.3, "equal", 1),
    "gaussian_sd0.5_hard": ("gaussian", 0.5, "equal", 1),
    "ar1_iid_se_sd0.3": ("ar1", 0.3, "equal", 1),
    "ar1_batch50_sd0.3": ("ar1", 0.3, "equal", 50),
    "zipf_lognormal_sd0.3": ("lognormal", 0.3, "zipf", 1),
}


def _stats(null: np.ndarray, target: np.ndarray, found: np.ndarray) -> tuple[float, float]:
    """FDP (discoveries among truly-null keys / discoveries) and the share of ``target``
    (the planted worse keys) found."""
    fdp = int((found & null).sum()) / max(int(found.sum()), 1)
    power = float((found & target).sum() / target.sum()) if target.any() else np.nan
    return fdp, power


def synthetic(name: str, reps: int, seed: int) -> dict:
    noise, sd, sizes_kind, batch = SCENARIOS[name]
    rng = np.random.default_rng(seed)
    cfg = FleetGateConfig(batch=batch)
    calib_one = {"kind": "continuous", "n": N, "n_used": N,
                 **pit_summary(rng.uniform(size=N))}
    out = {f"{m}_{w}": [] for m in ("ebh", "bh") for w in ("aa_fdp", "fdp", "power")}
    t0 = time.perf_counter()
    for _ in range(reps):
        n = _sizes(sizes_kind, rng)
        keys = np.repeat(np.arange(K), n)
        calib = dict.fromkeys(range(K), calib_one)
        for alt in (False, True):
            mu = np.full(K, -TOL)  # every null key on the boundary
            worse_true = np.zeros(K, bool)
            if alt:
                worse_true[rng.choice(K, N_WORSE, replace=False)] = True
                mu[worse_true] = -DELTA
            if sizes_kind == "equal":
                d = (mu[:, None] + sd * _noise(rng, noise, (K, N))).ravel()
            else:
                d = np.repeat(mu, n) + sd * _noise(rng, noise, keys.size)
            res = decide_fleet(d, np.zeros_like(d), keys, calib, cfg)
            t = res.table
            tested = ~np.isnan(t["p_value"].to_numpy())
            for m, found in (("ebh", t["worse"].to_numpy()), ("bh", bh(t["p_value"], Q))):
                fdp, power = _stats(~worse_true, worse_true & tested, found)
                if alt:
                    out[f"{m}_fdp"].append(fdp)
                    out[f"{m}_power"].append(power)
                else:
                    out[f"{m}_aa_fdp"].append(fdp)
    r = {"noise": noise, "sd_diff": sd, "key_sizes": sizes_kind, "batch": batch, "reps": reps,
         "tested_keys_last_rep": int(tested.sum()), "seconds": time.perf_counter() - t0}
    r.update({k: float(np.mean(v)) for k, v in out.items()})  # *_fdp means are FDRs
    _print(name, r)
    return r


def _print(name: str, r: dict) -> None:
    print(f"{name:24s} reps={r['reps']:4d}  null-only FDR e-BH {r['ebh_aa_fdp']:.3f} BH "
          f"{r['bh_aa_fdp']:.3f} | 50 worse: FDR e-BH {r['ebh_fdp']:.3f} BH {r['bh_fdp']:.3f}"
          f"  power e-BH {r['ebh_power']:.3f} BH {r['bh_power']:.3f}  ({r['seconds']:.0f}s)",
          flush=True)


# --- real fits: gamma per key ---------------------------------------------------------------
def gamma_mle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise gamma MLE (shape, scale) of a (keys, rows) array: Newton on the shape."""
    m = x.mean(1)
    s = np.log(m) - np.log(x).mean(1)
    a = (3 - s + np.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    for _ in range(8):
        a = a - (np.log(a) - special.digamma(a) - s) / (1 / a - special.polygamma(1, a))
    return a, m / a


def _ll(x, a, sc):
    return ((a - 1)[:, None] * np.log(x) - x / sc[:, None] - special.gammaln(a)[:, None]
            - (a * np.log(sc))[:, None])


def _exp_ll(a0, s0, a, sc):
    """E log f(X; a, sc) for X ~ Gamma(a0, s0): closed form."""
    return (a - 1) * (special.digamma(a0) + np.log(s0)) - a0 * s0 / sc - special.gammaln(a) \
        - a * np.log(sc)


def fitted(reps: int, seed: int, n_train: int = 500) -> dict:
    rng = np.random.default_rng(seed)
    # scale drift c with KL(Gamma(a, s) || Gamma(a, c s)) = a (c - 1 - log c) = 0.05 at a=2.5
    c = optimize.brentq(lambda c: 2.5 * (c - 1 - np.log(c)) - DELTA, 1.0001, 3.0)
    cfg = FleetGateConfig()
    out = {f"{m}_{w}": [] for m in ("ebh", "bh") for w in ("aa_fdp", "fdp", "power")}
    true_gap, took = [], []
    t0 = time.perf_counter()
    keys = np.repeat(np.arange(K), N)
    for _ in range(reps):
        a0, s0 = np.full(K, 2.5), rng.uniform(0.5, 5.0, K)
        test = rng.gamma(a0[:, None], s0[:, None], (K, N))
        ca, cs = gamma_mle(rng.gamma(a0[:, None], s0[:, None], (K, n_train)))
        champ = _ll(test, ca, cs)
        for alt in (False, True):
            drift = np.ones(K)
            if alt:
                drift[rng.choice(K, N_WORSE, replace=False)] = c
            na, ns = gamma_mle(rng.gamma(a0[:, None], (s0 * drift)[:, None], (K, n_train)))
            cand = _ll(test, na, ns)
            gap = _exp_ll(a0, s0, na, ns) - _exp_ll(a0, s0, ca, cs)  # true mean difference
            null = gap >= -TOL  # truly not worse; A/A refits can be a hair worse than -TOL
            u = stats.gamma.cdf(test, na[:, None], scale=ns[:, None])
            calib = {k: {"kind": "continuous", "n": N, "n_used": N, **pit_summary(u[k])}
                     for k in range(K)}
            res = decide_fleet(cand.ravel(), champ.ravel(), keys, calib, cfg)
            t = res.table
            for m, found in (("ebh", t["worse"].to_numpy()), ("bh", bh(t["p_value"], Q))):
                fdp, power = _stats(null, drift > 1, found)
                if alt:
                    out[f"{m}_fdp"].append(fdp)
                    out[f"{m}_power"].append(power)
                else:
                    out[f"{m}_aa_fdp"].append(fdp)
            if alt:
                true_gap.append(float(gap[drift > 1].mean()))
                took.append(res.counts["take_candidate"])
    r = {"noise": "gamma fits scored on held-out rows", "n_train": n_train, "reps": reps,
         "scale_drift_of_worse_keys": c, "true_mean_diff_of_worse_keys": float(np.mean(true_gap)),
         "take_candidate_mean_with_50_worse": float(np.mean(took)),
         "seconds": time.perf_counter() - t0,
         **{k: float(np.nanmean(v)) for k, v in out.items()}}
    _print("gamma_fitted", r)
    return r


def check_mle() -> float:
    """Max relative difference of the numpy gamma MLE from ``mleops.fit`` on 3 samples."""
    import mleops

    rng = np.random.default_rng(0)
    x = rng.gamma(2.5, 1.7, (3, 500))
    a, s = gamma_mle(x)
    ref = [mleops.fit(row, "gamma").params for row in x]
    return float(max(max(abs(a[i] / r["shape"] - 1), abs(s[i] / r["scale"] - 1))
                     for i, r in enumerate(ref)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20 repetitions")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fleet_gate.json"))
    a = ap.parse_args()
    reps = a.reps or (20 if a.quick else 200)
    mle_diff = check_mle()
    print(f"numpy gamma MLE vs mleops.fit: max rel diff {mle_diff:.1e}", flush=True)
    res = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
           "quick": a.quick, "keys": K, "rows_per_key": N, "worse_keys": N_WORSE,
           "worse_by_nats": DELTA, "fdr": Q, "tolerance": TOL,
           "gamma_mle_vs_mleops_max_rel_diff": mle_diff, "scenarios": {}}
    for i, name in enumerate(SCENARIOS):
        res["scenarios"][name] = synthetic(name, reps, seed=100 + i)
    res["scenarios"]["gamma_fitted"] = fitted(reps, seed=7)
    write_json(a.out, res)


if __name__ == "__main__":
    main()
