"""Latency and throughput of the real Seldon model server under fixed request rates.

Starts the microservice (serving venv) for a Gamma model, then drives it from a second
process with an open-loop schedule (requests due at fixed times, not after the previous
answer; latency counted from the due time, so queueing shows up) over keep-alive
connections, and reports p50/p99/throughput per rate.
Baseline in the same run: the engine's own per-request compute (in-process loglik of the same
100-row payload), so the ratio says what the HTTP/Seldon layer costs.
Usage: python benchmarks/serving.py [--rates 50,100,200] [--seconds 10] [--rows 100]
Target: p99 < 15 ms at 200 requests/s with 100-row payloads on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from _results import write_json

HERE = os.path.dirname(os.path.abspath(__file__))


def drive(url: str, rate: float, seconds: float, rows: int, pool: int = 32) -> dict:
    """Open-loop load: request i is due at start + i/rate; a pool of threads with persistent
    (keep-alive) connections sends them, as a production client's connection pool would.
    Latency is measured from the due time, so a late send (queueing) counts against it."""
    import http.client
    import queue
    from urllib.parse import urlparse

    payload = json.dumps({"data": {"ndarray": np.random.default_rng(0).gamma(
        2.0, 1.5, (rows, 1)).tolist()}}).encode()
    u = urlparse(url)
    n = int(rate * seconds)
    lat = np.full(n, np.nan)
    errors = []
    jobs: queue.Queue = queue.Queue()
    start = time.perf_counter() + 0.3

    def worker() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        while (i := jobs.get()) is not None:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("POST", "/api/v1.0/predictions", body=payload,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors.append(resp.status)
                else:
                    lat[i] = time.perf_counter() - due
            except Exception as e:  # counted, reported; reconnect for the next one
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(pool)]
    for th in threads:
        th.start()
    for i in range(n):
        jobs.put(i)
    for _ in threads:
        jobs.put(None)
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    ok = lat[np.isfinite(lat)]
    return {"rate": rate, "requests": n, "ok": int(ok.size), "errors": len(errors),
            "p50_ms": float(np.percentile(ok, 50) * 1e3) if ok.size else None,
            "p99_ms": float(np.percentile(ok, 99) * 1e3) if ok.size else None,
            "throughput_rps": float(ok.size / wall)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--drive", help=argparse.SUPPRESS)  # internal: the load-generator process
    ap.add_argument("--rates", default="50,100,200")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1, help="server worker processes")
    ap.add_argument("--threads", type=int, default=4, help="threads per server worker")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "serving.json"))
    a = ap.parse_args()
    if a.drive:
        print(json.dumps(drive(a.drive, float(a.rates), a.seconds, a.rows)))
        return

    import mleops
    from mleops.artifact import ModelArtifact
    from mleops.serving.process import LocalServer
    from mleops.serving.service import stage_model

    art = ModelArtifact.from_fit(mleops.fit(np.random.default_rng(1).gamma(2.0, 1.5, 5000),
                                            "gamma"))
    x = np.random.default_rng(0).gamma(2.0, 1.5, a.rows)
    art.loglik_rows(x)
    t0 = time.perf_counter()
    for _ in range(200):
        art.loglik_rows(x)
    engine_ms = (time.perf_counter() - t0) / 200 * 1e3
    results = {"rows": a.rows, "engine_in_process_ms": engine_ms, "runs": [],
               "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        stage_model(art, d, name="bench", version="1")
        results.update(workers=a.workers, threads=a.threads)
        with LocalServer(d, workers=a.workers, threads=a.threads) as server:
            warm = subprocess.run([sys.executable, __file__, "--drive", server.url, "--rates",
                                   "50", "--seconds", "2", "--rows", str(a.rows)],
                                  capture_output=True, text=True, check=True)
            results["warmup"] = json.loads(warm.stdout)  # compiles, fills caches; not scored
            for rate in [float(r) for r in a.rates.split(",")]:
                out = subprocess.run([sys.executable, __file__, "--drive", server.url,
                                      "--rates", str(rate), "--seconds", str(a.seconds),
                                      "--rows", str(a.rows)], capture_output=True, text=True,
                                     check=True)
                r = json.loads(out.stdout)
                r["p99_over_engine"] = r["p99_ms"] / engine_ms if r["p99_ms"] else None
                results["runs"].append(r)
                print(f"rate {rate:5.0f}/s: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
                      f"({r['p99_over_engine']:.1f}x the in-process engine {engine_ms:.2f} ms), "
                      f"throughput {r['throughput_rps']:.1f}/s, errors {r['errors']}",
                      flush=True)
    write_json(a.out, results)


if __name__ == "__main__":
    main()
