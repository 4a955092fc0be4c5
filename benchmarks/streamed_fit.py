"""Streamed fits over data larger than memory, and per-process shares across processes.

1. A ``--rows`` float64 Parquet dataset (default 1e9 rows, ~8 GB, written here once under
   ``--dir``, uncompressed, 1e6-row row groups). The baseline, measured in the same run:
   reading the same column with pyarrow into numpy, batch by batch (the physical limit of a
   one-pass fit). Then ``mleops fit DIR --max-memory`` for lognormal (one pass of sufficient
   statistics) and Weibull (Newton, one pass per step), each in a fresh process: wall time,
   rows/s as a fraction of the read rate, and peak RSS.
2. ``--shard-rows`` (default 4e7) censored Weibull rows: the single-process in-memory fit's
   peak RSS against each of 4 local processes joined by ``jax.distributed`` streaming their
   shares (``--distributed``).
Targets (issue 16): peak RSS < 2 GB and rows/s >= 50% of the read rate on 1e9 rows; each of
4 processes' peak RSS <= 0.35x the single-process peak.
Usage: python benchmarks/streamed_fit.py [--rows 1e9] [--dir /tmp/mleops-stream-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time

import numpy as np
from _results import write_json

HERE = os.path.dirname(os.path.abspath(__file__))
MLEOPS = os.path.join(os.path.dirname(sys.executable), "mleops")
FILE_ROWS = 50_000_000


def write_dataset(path: str, rows: int, censored: bool = False) -> None:
    """``rows`` rows in files of FILE_ROWS (skipped when already there, same seed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(path, exist_ok=True)
    for i, start in enumerate(range(0, rows, FILE_ROWS)):
        target = os.path.join(path, f"part-{i:04d}.parquet")
        if os.path.exists(target):
            continue
        n = min(FILE_ROWS, rows - start)
        rng = np.random.default_rng(i)
        with pq.ParquetWriter(target + ".tmp", pa.schema(
                [("x", pa.float64())] + ([("e", pa.float64())] if censored else [])),
                compression="none") as w:
            for a in range(0, n, 1_000_000):
                m = min(1_000_000, n - a)
                cols = {"x": rng.weibull(1.5, m) * 2.0}
                if censored:
                    cols["e"] = (rng.random(m) < 0.7).astype(np.float64)
                w.write_table(pa.table(cols), row_group_size=1_000_000)
        os.replace(target + ".tmp", target)


def read_rate(path: str, columns: list[str]) -> dict:
    """The baseline: every row group of every file read into float64 numpy arrays."""
    code = f"""
import glob, time, numpy as np, pyarrow.parquet as pq
t0, n, s = time.perf_counter(), 0, 0.0
for f in sorted(glob.glob({path!r} + '/*.parquet')):
    for b in pq.ParquetFile(f).iter_batches(batch_size=1_000_000, columns={columns!r}):
        for c in {columns!r}:
            a = np.asarray(b.column(c).to_numpy(), dtype=np.float64)
            s += float(a[0])
        n += b.num_rows
print(n, time.perf_counter() - t0)
"""
    out, rss = measured([sys.executable, "-c", code])
    rows, wall = out.split()
    return {"rows": int(rows), "seconds": float(wall), "rows_per_s": int(rows) / float(wall),
            "peak_rss_mb": rss}


def measured(cmd: list[str], env: dict | None = None) -> tuple[str, float]:
    """(stdout, peak RSS in MB) of ``cmd`` run in a wrapper that has no other child."""
    wrap = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], "
            "capture_output=True, text=True); sys.stderr.write(r.stderr[-3000:]); "
            "print(r.stdout); print('RC', r.returncode); "
            "print('RSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", wrap, *cmd], capture_output=True, text=True,
                       env=env)
    lines = p.stdout.strip().splitlines()
    rc, rss = int(lines[-2].split()[1]), int(lines[-1].split()[1]) / 1024
    if rc:
        raise RuntimeError(f"{cmd[:3]} exited {rc}: {p.stderr[-2000:]}")
    return "\n".join(lines[:-2]), rss


def timed_fit(args: list[str], env=None) -> dict:
    t0 = time.perf_counter()
    out, rss = measured([MLEOPS, "fit", *args, "--json"], env)
    wall = time.perf_counter() - t0
    res = json.loads(out[out.index("{"):])
    return {"seconds": wall, "peak_rss_mb": rss, "n_obs": res["n_obs"],
            "params": res["params"], "converged": res["converged"],
            "iterations": res["iterations"], "batch_rows": res.get("batch_rows")}


def shards(path: str, processes: int, max_memory: str) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(processes):
        env = {**os.environ, "COORDINATOR_ADDRESS": "127.0.0.1", "COORDINATOR_PORT": str(port),
               "NUM_PROCESSES": str(processes), "PROCESS_ID": str(rank),
               "JAX_PLATFORMS": "cpu"}
        wrap = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                "print('RSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
                "r.returncode)")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", wrap, MLEOPS, "fit", path, "--family", "weibull", "--column",
             "x", "--censor-column", "e", "--distributed", "--max-memory", max_memory],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    t0 = time.perf_counter()
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    result, rows = {}, []
    for out in outs:
        tail = out.strip().splitlines()[-1].split()
        if tail[2] != "0":
            raise RuntimeError(f"a process exited {tail[2]}")
        rows.append({"peak_rss_mb": int(tail[1]) / 1024})
        if "{" in out:
            body = out[out.index("{"):out.rindex("}") + 1]
            result = json.loads(body)
    return [{**r, "rows": n, "seconds": wall} for r, n in zip(rows, result["rows_per_process"])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=float, default=1e9)
    ap.add_argument("--shard-rows", type=float, default=4e7)
    ap.add_argument("--dir", default="/tmp/mleops-stream-bench")
    ap.add_argument("--max-memory", default="1GB")
    ap.add_argument("--skip-weibull", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "streamed_fit.json"))
    a = ap.parse_args()
    big, small = os.path.join(a.dir, f"x-{int(a.rows)}"), os.path.join(a.dir,
                                                                       f"xe-{int(a.shard_rows)}")
    t0 = time.perf_counter()
    write_dataset(big, int(a.rows))
    write_dataset(small, int(a.shard_rows), censored=True)
    results: dict = {"rows": int(a.rows), "max_memory": a.max_memory, "cpus": os.cpu_count(),
                     "write_seconds": time.perf_counter() - t0}
    read_rate(big, ["x"])  # warms the page cache: both sides then read from memory
    results["read"] = base = read_rate(big, ["x"])
    print(f"pyarrow read: {base['rows_per_s'] / 1e6:.1f} M rows/s "
          f"({base['seconds']:.1f} s), peak RSS {base['peak_rss_mb']:.0f} MB", flush=True)
    for family in ["lognormal"] + ([] if a.skip_weibull else ["weibull"]):
        r = timed_fit([big, "--family", family, "--column", "x", "--max-memory", a.max_memory])
        r["rows_per_s"] = r["n_obs"] / r["seconds"]
        r["over_read_rate"] = r["rows_per_s"] / base["rows_per_s"]
        results[family] = r
        print(f"{family}: {r['seconds']:.1f} s, {r['rows_per_s'] / 1e6:.1f} M rows/s = "
              f"{100 * r['over_read_rate']:.0f}% of the read rate, peak RSS "
              f"{r['peak_rss_mb']:.0f} MB, {r['iterations']} Newton steps", flush=True)
    single = timed_fit([small, "--family", "weibull", "--column", "x", "--censor-column", "e"])
    four = shards(small, 4, "256MB")
    worst = max(p["peak_rss_mb"] for p in four)
    results["shards"] = {"rows": int(a.shard_rows), "single_in_memory": single,
                         "processes": four, "max_over_single": worst / single["peak_rss_mb"]}
    print(f"4 processes on {a.shard_rows:.0e} rows: peak RSS per process "
          f"{[round(p['peak_rss_mb']) for p in four]} MB vs single in-memory "
          f"{single['peak_rss_mb']:.0f} MB: {worst / single['peak_rss_mb']:.2f}x "
          f"(rows {[p['rows'] for p in four]})", flush=True)
    write_json(a.out, results)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()
