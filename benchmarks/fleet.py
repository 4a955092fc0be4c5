"""Time ``mleops.fit_fleet`` on keyed fleets against per-key loops of scipy / lifelines /
statsmodels fits on the same rows, in the same run (issue 30's fleet-fit targets).

Sections (``--only`` picks some; all by default):

* ``weibull``: Weibull rows, ~30% right-censored by an independent uniform follow-up.
  ``fit_fleet`` (first call with compilation, then warm) against a ``joblib.Parallel`` loop
  of lifelines ``WeibullFitter`` per key, a plain loop of lifelines, and statsmodels per
  key: ``GenericLikelihoodModel`` with the censored Weibull log-likelihood (statsmodels has
  no censored Weibull built in), as a plain loop and as a joblib loop.
* ``negbinom``: negative binomial counts. ``fit_fleet(..., "negbinom")`` against a joblib
  loop of ``scipy.optimize.minimize`` on ``scipy.stats.nbinom.logpmf`` per key and
  statsmodels ``NegativeBinomial`` (intercept only) per key (plain loop and joblib loop).
* ``streamed``: the Weibull fleet written as a Parquet dataset of ``--files`` files, fitted
  by ``mleops fit DIR --key-column key --max-memory 512MB --json`` in a subprocess; its peak
  RSS (``/usr/bin/time -v`` maximum resident set size, and psutil polling of the process
  tree) and wall time; its estimates against the in-memory fleet's.

Baselines are timed on a subset of keys (``--subset``) and scaled linearly to the fleet
(stated in the output as ``scaled_from``); the per-key rows are grouped before the baseline
clock starts (``fit_fleet``'s time includes its own grouping of the whole table). Every
timing runs ``--repeat`` times (at least 2) and the minimum is reported; the joblib pool is
started before the first timed run is over, so the minimum is a warm pool. Load averages
are recorded per section. Writes ``benchmarks/results/fleet.json``.
Usage: ``python benchmarks/fleet.py [--quick] [--only weibull,negbinom,streamed]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
from _results import write_json

os.environ.setdefault("MLEOPS_JAX_CACHE", "off")  # in-process timings: compile measured apart

import jax  # noqa: E402
import pandas as pd  # noqa: E402

import mleops  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N_JOBS = 2


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def table(keys: int, rows: int, seed: int = 6) -> pd.DataFrame:
    """``keys`` keys of ``rows`` rows each: Weibull times (per-key shape and scale),
    right-censored by an independent uniform follow-up (about 30% censored), rows
    shuffled."""
    rng = np.random.default_rng(seed)
    shape = np.repeat(rng.uniform(0.8, 2.5, keys), rows)
    scale = np.repeat(rng.uniform(1.0, 10.0, keys), rows)
    t = scale * rng.weibull(shape)
    c = rng.uniform(0.3, 2.35, keys * rows) * scale
    df = pd.DataFrame({"key": np.repeat(np.arange(keys), rows), "x": np.minimum(t, c),
                       "e": (t <= c).astype(np.int8)})
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def counts_table(keys: int, rows: int, seed: int = 7) -> pd.DataFrame:
    """``keys`` keys of ``rows`` negative binomial counts (per-key n in [0.5, 5], mean in
    [2, 30]), rows shuffled."""
    rng = np.random.default_rng(seed)
    n = rng.uniform(0.5, 5.0, keys)
    mu = rng.uniform(2.0, 30.0, keys)
    y = rng.negative_binomial(np.repeat(n, rows), np.repeat(n / (n + mu), rows))
    df = pd.DataFrame({"key": np.repeat(np.arange(keys), rows), "x": y.astype(np.float64)})
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


# ---- per-key baselines (module level: joblib workers unpickle them) ------------------------

def lifelines_weibull(x, e):
    import lifelines

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = lifelines.WeibullFitter().fit(x, e)
    return (f.rho_, f.lambda_), f.log_likelihood_, True


def statsmodels_weibull(x, e):
    """statsmodels per key: GenericLikelihoodModel, censored Weibull log-likelihood in
    (log shape, log scale), Newton (numerical derivatives), start from log-moments."""
    from statsmodels.base.model import GenericLikelihoodModel

    class CensoredWeibull(GenericLikelihoodModel):
        def __init__(self, endog, event, **kw):
            super().__init__(endog, None, **kw)
            self.event = event

        def loglikeobs(self, params):
            c, s = np.exp(params)
            z = self.endog / s
            return self.event * (params[0] - params[1] + (c - 1) * np.log(z)) - z ** c

    lx = np.log(x)
    c0 = np.pi / np.sqrt(6 * max(lx.var(), 1e-12))
    start = np.array([np.log(c0), lx.mean() + 0.5772156649015329 / c0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CensoredWeibull(x, e.astype(np.float64)).fit(start_params=start, method="newton",
                                                         maxiter=200, disp=0)
    return tuple(np.exp(r.params)), float(r.llf), bool(r.mle_retvals.get("converged", True))


def scipy_negbinom(y):
    """scipy per key: L-BFGS-B on -sum nbinom.logpmf in (log n, logit p), from the method
    of moments."""
    from scipy import optimize, special, stats

    m, v = y.mean(), y.var()
    v = max(v, 1.05 * m)
    q = m / v
    start = np.array([np.log(m * q / (1 - q)), special.logit(q)])

    def nll(th):
        return -stats.nbinom.logpmf(y, np.exp(th[0]), special.expit(th[1])).sum()

    r = optimize.minimize(nll, start, method="L-BFGS-B")
    return (float(np.exp(r.x[0])), float(special.expit(r.x[1]))), float(-r.fun), bool(r.success)


def statsmodels_negbinom(y):
    """statsmodels per key: NegativeBinomial (NB2) with exog = ones, Newton; (const, alpha)
    -> n = 1 / alpha, p = 1 / (1 + alpha exp(const))."""
    from statsmodels.discrete.discrete_model import NegativeBinomial

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = NegativeBinomial(y, np.ones(len(y))).fit(method="newton", maxiter=200, disp=0)
    const, alpha = r.params
    return ((1 / alpha, 1 / (1 + alpha * np.exp(const))), float(r.llf),
            bool(r.mle_retvals.get("converged", True)))


def run_loop(fn, items, repeat: int, parallel: bool) -> tuple[list[float], list]:
    """Times of ``repeat`` runs of ``fn`` over ``items`` (a plain loop, or joblib with
    ``N_JOBS`` workers), and the last run's results."""
    from joblib import Parallel, delayed

    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        if parallel:
            out = Parallel(n_jobs=N_JOBS)(delayed(fn)(*it) for it in items)
        else:
            out = [fn(*it) for it in items]
        times.append(time.perf_counter() - t0)
    return times, out


def time_fleet(df, family, repeat, **kw):
    run = lambda: mleops.fit_fleet(df, family, key="key", column="x", **kw)  # noqa: E731
    t0 = time.perf_counter()
    fleet = run()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fleet = run()
        warm.append(time.perf_counter() - t0)
    return fleet, first, warm


def compare(fleet, names, ref_keys, results) -> dict:
    ours = np.array([[fleet[k]["params"][n] for n in names] for k in ref_keys])
    theirs = np.array([r[0] for r in results], dtype=np.float64)
    ll_ours = np.array([fleet[k]["loglik"] for k in ref_keys])
    ll_ref = np.array([r[1] for r in results], dtype=np.float64)
    rel = np.abs(ours / theirs - 1)
    return {"params_max_rel_diff": float(np.max(rel)),
            "params_median_rel_diff": float(np.median(rel)),
            "loglik_max_rel_diff": float(np.max(np.abs(ll_ours / ll_ref - 1))),
            "loglik_mleops_minus_baseline_min": float(np.min(ll_ours - ll_ref)),
            "loglik_at_least_as_good": bool((ll_ours >= ll_ref - 1e-9 * np.abs(ll_ref)).all()),
            "baseline_converged": int(sum(bool(r[2]) for r in results))}


def bench_family(name, df, fleet_kw, param_names, baselines, keys, subset, repeat) -> dict:
    """fit_fleet on ``df`` vs each (label, fn, parallel) baseline on ``subset`` keys."""
    out = {"keys": keys, "rows_per_key": len(df) // keys, "rows": len(df),
           "load_before": load()}
    if "e" in df:
        out["censored_share"] = float(1 - df.e.mean())
    fleet, first, warm = time_fleet(df, name, repeat, **fleet_kw)
    best = min(warm)
    out.update(fit_fleet_first_call_s=first, fit_fleet_warm_s=best, fit_fleet_warm_runs_s=warm,
               compiled_shapes=sorted(set(fleet.shapes)), status_counts=fleet.status_counts(),
               load_after_mleops=load())
    print(f"{name}: {keys} keys x {out['rows_per_key']} rows: fit_fleet {best:.3f}s warm "
          f"(runs {', '.join(f'{t:.3f}' for t in warm)}), {first:.2f}s first call "
          f"(compile included); status {fleet.status_counts()}", flush=True)
    cols = ["x", "e"] if "e" in df else ["x"]
    sub = df[df.key < subset]
    groups = {k: tuple(g[c].to_numpy() for c in cols) for k, g in sub.groupby("key")}
    ref_keys = list(groups)
    items = [groups[k] for k in ref_keys]
    out["baselines"] = {}
    for label, fn, parallel in baselines:
        times, res = run_loop(fn, items, repeat, parallel)
        t_sub = min(times)
        scaled = t_sub * keys / len(items)
        b = {"how": f"joblib.Parallel(n_jobs={N_JOBS})" if parallel else "plain loop",
             "subset_keys": len(items), "subset_runs_s": times, "subset_s": t_sub,
             "scaled_from": f"{len(items)} keys timed (min of {repeat} runs), "
                            f"x {keys / len(items):g} (linear)",
             "scaled_s": scaled, "ratio_warm": scaled / best, "ratio_first_call": scaled / first,
             **compare(fleet, param_names, ref_keys, res), "load_after": load()}
        out["baselines"][label] = b
        print(f"  {label:22s} {b['how']:24s} {t_sub:7.2f}s on {len(items)} keys -> "
              f"{scaled:8.1f}s scaled: {b['ratio_warm']:6.1f}x warm, "
              f"{b['ratio_first_call']:5.1f}x first call; params max rel diff "
              f"{b['params_max_rel_diff']:.1e}, loglik >= baseline: "
              f"{b['loglik_at_least_as_good']}, baseline converged "
              f"{b['baseline_converged']}/{len(items)}", flush=True)
    return out, fleet


def tree_rss(proc) -> int:
    try:
        procs = [proc, *proc.children(recursive=True)]
    except Exception:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except Exception:
            pass
    return total


def run_streamed(data_dir: str, max_memory: str, workdir: str, i: int) -> dict:
    """``mleops fit DIR ... --max-memory`` under /usr/bin/time -v, its process tree's RSS
    polled by psutil every 20 ms."""
    import psutil

    exe = os.path.join(os.path.dirname(sys.executable), "mleops")
    cmd = [exe, "fit", data_dir, "--family", "weibull", "--key-column", "key", "--column", "x",
           "--censor-column", "e", "--max-memory", max_memory, "--json"]
    tfile = os.path.join(workdir, f"time-{i}.txt")
    ofile = os.path.join(workdir, f"out-{i}.json")
    efile = os.path.join(workdir, f"err-{i}.txt")
    peak = [0]
    with open(ofile, "w") as fo, open(efile, "w") as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen(["/usr/bin/time", "-v", "-o", tfile, *cmd], stdout=fo, stderr=fe)
        root = psutil.Process(p.pid)
        done = threading.Event()

        def poll():
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(root))
                time.sleep(0.02)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        rc = p.wait()
        wall = time.perf_counter() - t0
        done.set()
        th.join()
    maxrss_kb = None
    with open(tfile) as f:
        for line in f:
            if "Maximum resident set size" in line:
                maxrss_kb = int(line.rsplit(":", 1)[1])
    if rc != 0:
        with open(efile) as f:
            raise RuntimeError(f"streamed fit failed (rc {rc}): {f.read()[-2000:]}")
    return {"wall_s": wall, "maxrss_time_v_bytes": None if maxrss_kb is None else maxrss_kb * 1024,
            "peak_tree_rss_psutil_bytes": peak[0], "json": ofile, "command": " ".join(cmd)}


def bench_streamed(df, fleet, files: int, max_memory: str, repeat: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mleops.batches import parse_size
    from mleops.fleet_stream import partitions_for

    work = tempfile.mkdtemp(prefix="mleops-fleet-bench-")
    try:
        data_dir = os.path.join(work, "data")
        os.makedirs(data_dir)
        t0 = time.perf_counter()
        for i, part in enumerate(np.array_split(np.arange(len(df)), files)):
            pq.write_table(pa.Table.from_pandas(df.iloc[part], preserve_index=False),
                           os.path.join(data_dir, f"part-{i:03d}.parquet"))
        write_s = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir))
        out = {"files": files, "rows": len(df), "dataset_bytes": size, "write_s": write_s,
               "max_memory": max_memory,
               "partitions": partitions_for(len(df), parse_size(max_memory)),
               "jax_cache": os.environ.get("MLEOPS_JAX_CACHE"), "load_before": load()}
        runs = [run_streamed(data_dir, max_memory, work, i) for i in range(repeat)]
        with open(runs[-1]["json"]) as f:
            doc = json.load(f)
        got = {r["key"]: r for r in doc["rows"]}
        keys = fleet.key_list()
        ours = np.array([[fleet[k]["params"][n] for n in ("shape", "scale")] for k in keys])
        theirs = np.array([[got[k]["params"][n] for n in ("shape", "scale")] for k in keys])
        ll = np.array([fleet[k]["loglik"] for k in keys])
        ll_s = np.array([got[k]["loglik"] for k in keys])
        out.update(command=runs[0]["command"] + " > out.json",
                   wall_runs_s=[r["wall_s"] for r in runs],
                   wall_s=min(r["wall_s"] for r in runs),
                   peak_rss_time_v_runs_bytes=[r["maxrss_time_v_bytes"] for r in runs],
                   peak_rss_time_v_bytes=max(r["maxrss_time_v_bytes"] for r in runs),
                   peak_tree_rss_psutil_runs_bytes=[r["peak_tree_rss_psutil_bytes"]
                                                    for r in runs],
                   peak_tree_rss_psutil_bytes=max(r["peak_tree_rss_psutil_bytes"]
                                                  for r in runs),
                   n_keys=doc["n_keys"], status_counts=doc["status_counts"],
                   keys_match=sorted(got) == sorted(keys),
                   params_max_rel_diff_vs_in_memory=float(np.max(np.abs(theirs / ours - 1))),
                   loglik_max_abs_diff_vs_in_memory=float(np.max(np.abs(ll_s - ll))),
                   load_after=load())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gb = out["peak_rss_time_v_bytes"] / 1e9
    print(f"streamed: {files} Parquet files, {len(df)} rows, --max-memory {max_memory} "
          f"({out['partitions']} partitions): wall {out['wall_s']:.1f}s (runs "
          f"{', '.join(f'{t:.1f}' for t in out['wall_runs_s'])}), peak RSS {gb:.3f} GB "
          f"(time -v), {out['peak_tree_rss_psutil_bytes'] / 1e9:.3f} GB (psutil tree); "
          f"params max rel diff vs in-memory {out['params_max_rel_diff_vs_in_memory']:.1e}",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="2,000 keys x 1,000 rows, 50-key baseline subsets, 4 Parquet files")
    ap.add_argument("--keys", type=int, help="keys per fleet (default 10,000; quick 2,000)")
    ap.add_argument("--rows", type=int, default=1_000, help="rows per key")
    ap.add_argument("--subset", type=int, help="keys each baseline is timed on (default 200; "
                    "quick 50)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs each (min reported)")
    ap.add_argument("--files", type=int, help="Parquet files of the streamed dataset "
                    "(default 20; quick 4)")
    ap.add_argument("--max-memory", default="512MB")
    ap.add_argument("--only", default="weibull,negbinom,streamed")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fleet.json"))
    a = ap.parse_args()
    keys = a.keys or (2_000 if a.quick else 10_000)
    subset = min(a.subset or (50 if a.quick else 200), keys)
    files = a.files or (4 if a.quick else 20)
    repeat = max(2, a.repeat)
    only = set(a.only.split(","))
    res = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                       "python": sys.version.split()[0]},
           "command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
           "quick": a.quick, "repeat": repeat, "load_start": load()}
    fleet = df = None
    if "weibull" in only or "streamed" in only:
        df = table(keys, a.rows)
    if "weibull" in only:
        res["weibull"], fleet = bench_family(
            "weibull", df, {"event": "e"}, ("shape", "scale"),
            [("lifelines_joblib", lifelines_weibull, True),
             ("lifelines_loop", lifelines_weibull, False),
             ("statsmodels_loop", statsmodels_weibull, False),
             ("statsmodels_joblib", statsmodels_weibull, True)], keys, subset, repeat)
    if "streamed" in only:
        if fleet is None:
            fleet = mleops.fit_fleet(df, "weibull", key="key", column="x", event="e")
        res["streamed"] = bench_streamed(df, fleet, files, a.max_memory, repeat)
    del df, fleet
    if "negbinom" in only:
        res["negbinom"], _ = bench_family(
            "negbinom", counts_table(keys, a.rows), {}, ("n", "p"),
            [("scipy_joblib", scipy_negbinom, True),
             ("scipy_loop", scipy_negbinom, False),
             ("statsmodels_loop", statsmodels_negbinom, False),
             ("statsmodels_joblib", statsmodels_negbinom, True)], keys, subset, repeat)
    res["load_end"] = load()
    write_json(a.out, res)


if __name__ == "__main__":
    main()
