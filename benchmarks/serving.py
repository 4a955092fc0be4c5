"""Latency and throughput of the real model servers, side by side in one run.

Servers, each started alone while measured (2 cores: the load generator needs the other):
``v1`` the Seldon Core microservice (serving venv), ``v2`` the mleops OIP v2 server on
KServe's ModelServer over REST, ``v2grpc`` the same server over gRPC (KServe's own
``GRPCInferenceService`` stubs, one channel per client thread), and ``bare``: a ``kserve.Model`` that returns a constant, for
the cost of the protocol stack alone. For each: an open-loop schedule at fixed rates
(requests due at fixed times, not after the previous answer; latency counted from the due
time, so queueing shows up) over keep-alive connections, reporting p50/p99 and errors; then
the maximum throughput (closed loop: ``--clients`` connections sending back to back).
Baselines in the same run: the engine's own per-request compute (in-process loglik of the
same 100-row payload) and the bare KServe model.
Usage: python benchmarks/serving.py [--rates 50,100,200] [--seconds 10] [--rows 100]
[--servers v1,v2,v2grpc,bare,v2fleet] (v2fleet: a 10,000-key fleet, 100-row requests mixing
20 keys; its RSS and p99 at 200 req/s against the one-model v2 server's)
Targets: v2 p99 < 15 ms at 200 requests/s with 100-row payloads and 0 errors on 2 cores;
v2 REST and gRPC maximum throughput >= v1 REST's.
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


FLEET_KEYS, KEYS_PER_REQUEST = 10_000, 20


def payload(protocol: str, rows: int) -> tuple[str, bytes]:
    """(path, body) of the benchmark request in each protocol (``v2fleet``: the rows of 20
    keys of a 10,000-key fleet, as a BYTES key tensor)."""
    x = np.random.default_rng(0).gamma(2.0, 1.5, rows).tolist()
    if protocol == "v2fleet":
        keys = np.random.default_rng(0).choice(FLEET_KEYS, KEYS_PER_REQUEST, replace=False)
        doc = {"inputs": [
            {"name": "key", "datatype": "BYTES", "shape": [rows],
             "data": [f"k{keys[i % KEYS_PER_REQUEST]}" for i in range(rows)]},
            {"name": "x", "datatype": "FP64", "shape": [rows], "data": x}]}
        return "/v2/models/fleet/infer", json.dumps(doc).encode()
    if protocol == "v1":
        return "/api/v1.0/predictions", json.dumps({"data": {"ndarray": [[v] for v in x]}}
                                                   ).encode()
    doc = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [rows], "data": x}]}
    return f"/v2/models/{'bench' if protocol == 'v2' else 'bare'}/infer", json.dumps(doc).encode()


def _http_sender(url: str, protocol: str, rows: int):
    """A function sending the benchmark request once over one keep-alive connection: the
    HTTP status (or raises)."""
    import http.client
    from urllib.parse import urlparse

    path, body = payload(protocol, rows)
    u = urlparse(url)
    conn = [http.client.HTTPConnection(u.hostname, u.port, timeout=10)]
    conn[0].connect()  # connected before the schedule starts, as a warm client pool is

    def send() -> int:
        try:
            conn[0].request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn[0].getresponse()
            resp.read()
            return resp.status
        except Exception:
            conn[0].close()  # reconnect for the next one
            conn[0] = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            raise

    return send


def _grpc_sender(target: str, rows: int):
    """The same request as an OIP ``ModelInfer`` call on one gRPC channel: 200 when answered."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as stubs

    x = np.random.default_rng(0).gamma(2.0, 1.5, rows).tolist()
    request = pb.ModelInferRequest(model_name="bench", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP64", shape=[rows], contents=pb.InferTensorContents(fp64_contents=x))])
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=30)  # connected before the schedule
    stub = stubs.GRPCInferenceServiceStub(channel)

    def send() -> int:
        stub.ModelInfer(request, timeout=10)
        return 200

    return send


def drive(url: str, protocol: str, rate: float, seconds: float, rows: int,
          clients: int = 32) -> dict:
    """Open loop (``rate`` > 0): request i is due at start + i/rate, sent by a pool of
    threads with keep-alive connections (gRPC: channels) as a production client's pool
    would, latency from the due time. Closed loop (``rate`` == 0): ``clients`` connections
    back to back for ``seconds``: the maximum throughput."""
    import queue

    def sender():
        return _grpc_sender(url, rows) if protocol == "v2grpc" else _http_sender(url, protocol,
                                                                                  rows)

    if protocol == "v2grpc":  # imported once here, not by every worker thread at once
        sys.argv = sys.argv[:1]  # kserve parses sys.argv at import: give it nothing of ours
        import grpc  # noqa: F401
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc  # noqa: F401
    n = int(rate * seconds) if rate else 10 ** 9
    lat: list[float] = []
    errors: list = []
    jobs: queue.Queue = queue.Queue()
    ready, go = threading.Barrier(clients + 1), threading.Event()
    clock: list[float] = []

    def worker() -> None:
        try:
            send = sender()  # every connection made before the first request is due
        except Exception as e:
            errors.append(f"connect: {type(e).__name__}: {e}")
            ready.wait()
            return
        ready.wait()
        go.wait()
        start = clock[0]
        stop_at = start + seconds
        while (i := jobs.get() if rate else 0) is not None:
            due = start + i / rate if rate else time.perf_counter()
            if not rate and due > stop_at:
                break
            if (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            try:
                status = send()
                if status == 200:
                    lat.append(time.perf_counter() - due)
                else:
                    errors.append(status)
            except Exception as e:  # counted, reported
                errors.append(type(e).__name__)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for th in threads:
        th.start()
    ready.wait()
    start = time.perf_counter() + 0.1
    clock.append(start)
    go.set()
    if rate:
        for i in range(n):
            jobs.put(i)
        for _ in threads:
            jobs.put(None)
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    ok = np.asarray(lat)
    return {"rate": rate or "max", "requests": int(ok.size + len(errors)), "ok": int(ok.size),
            "errors": len(errors), "error_kinds": sorted({str(e) for e in errors})[:5],
            "p50_ms": float(np.percentile(ok, 50) * 1e3) if ok.size else None,
            "p99_ms": float(np.percentile(ok, 99) * 1e3) if ok.size else None,
            "throughput_rps": float(ok.size / wall)}


def bare_server(port: int) -> None:
    """A kserve.Model returning a constant tensor, behind the same bound ModelServer."""
    sys.argv = sys.argv[:1]
    from kserve import Model, ModelServer
    from kserve.protocol.infer_type import InferOutput, InferResponse

    from mleops.serving.oip_launch import bind, quiet_request_logs

    class Constant(Model):
        def __init__(self):
            super().__init__("bare")
            self.ready = True

        def predict(self, request, headers=None):
            n = request.inputs[0].shape[0]
            return InferResponse(response_id=request.id or "0", model_name="bare",
                                 infer_outputs=[InferOutput("loglik", [n], "FP64",
                                                            data=[0.0] * n)])

    bind("127.0.0.1")
    server = ModelServer(http_port=port, grpc_port=0, enable_grpc=False, workers=1)
    quiet_request_logs()
    server.start([Constant()])


def _run(url: str, protocol: str, rate: float, seconds: float, rows: int,
         clients: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--drive", url, "--protocol", protocol,
                          "--rates", str(rate), "--seconds", str(seconds), "--rows",
                          str(rows), "--clients", str(clients)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def _measure(name: str, url: str, a, engine_ms: float) -> dict:
    _run(url, name, 50, 2, a.rows, 8)  # compiles, fills caches; not scored
    runs = []
    for rate in [float(r) for r in a.rates.split(",")]:
        r = _run(url, name, rate, a.seconds, a.rows, 32)
        r["p99_over_engine"] = r["p99_ms"] / engine_ms if r["p99_ms"] else None
        runs.append(r)
        print(f"{name:6s} rate {rate:5.0f}/s: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} "
              f"ms ({r['p99_over_engine']:.1f}x the engine's {engine_ms:.2f} ms), "
              f"throughput {r['throughput_rps']:.1f}/s, errors {r['errors']}", flush=True)
    top = _run(url, name, 0, a.seconds, a.rows, a.clients)
    print(f"{name:6s} max throughput ({a.clients} clients): {top['throughput_rps']:.1f}/s, "
          f"p99 {top['p99_ms']:.2f} ms, errors {top['errors']}", flush=True)
    return {"runs": runs, "max": top}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--drive", help=argparse.SUPPRESS)  # internal: the load-generator process
    ap.add_argument("--bare", type=int, help=argparse.SUPPRESS)  # internal: the bare server
    ap.add_argument("--protocol", default="v1", help=argparse.SUPPRESS)
    ap.add_argument("--rates", default="50,100,200")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--clients", type=int, default=8, help="connections for max throughput")
    ap.add_argument("--threads", type=int, default=4, help="threads of the v1 server")
    ap.add_argument("--servers", default="v1,v2,v2grpc,bare")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "serving.json"))
    a = ap.parse_args()
    if a.drive:
        print(json.dumps(drive(a.drive, a.protocol, float(a.rates), a.seconds, a.rows,
                               a.clients)))
        return
    if a.bare:
        return bare_server(a.bare)

    import mleops
    from mleops.artifact import ModelArtifact
    from mleops.serving.process import LocalServer, OipServer, free_port
    from mleops.serving.service import stage_model

    art = ModelArtifact.from_fit(mleops.fit(np.random.default_rng(1).gamma(2.0, 1.5, 5000),
                                            "gamma"))
    x = np.random.default_rng(0).gamma(2.0, 1.5, a.rows)
    art.loglik_rows(x)
    t0 = time.perf_counter()
    for _ in range(200):
        art.loglik_rows(x)
    engine_ms = (time.perf_counter() - t0) / 200 * 1e3
    results = {"rows": a.rows, "engine_in_process_ms": engine_ms, "cpus": os.cpu_count(),
               "v1_threads": a.threads, "servers": {}}
    with tempfile.TemporaryDirectory() as d:
        stage_model(art, d, name="bench", version="1")
        fleet_dir = os.path.join(d, "fleet")
        if "v2fleet" in a.servers.split(","):
            _stage_fleet(fleet_dir)
        for name in a.servers.split(","):
            if name == "bare":
                port = free_port()
                proc = subprocess.Popen([sys.executable, __file__, "--bare", str(port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    _wait_http(f"http://127.0.0.1:{port}/v2/health/ready")
                    results["servers"][name] = _measure(name, f"http://127.0.0.1:{port}", a,
                                                        engine_ms)
                finally:
                    proc.terminate()
                    proc.wait(30)
                continue
            server = (LocalServer(d, threads=a.threads) if name == "v1" else
                      OipServer(fleet_dir if name == "v2fleet" else d))
            with server:
                where = server.grpc_target if name == "v2grpc" else server.url
                rss = _rss_mb(server.proc.pid)  # loaded and warmed, before any traffic
                results["servers"][name] = {"rss_mb": rss, **_measure(name, where, a,
                                                                     engine_ms)}
                after = results["servers"][name]["rss_after_mb"] = _rss_mb(server.proc.pid)
                print(f"{name:6s} server RSS {rss:.1f} MB before traffic, {after:.1f} MB "
                      f"after", flush=True)
    s = results["servers"]
    for v2 in ("v2", "v2grpc"):
        if "v1" in s and v2 in s:
            ratio = s[v2]["max"]["throughput_rps"] / s["v1"]["max"]["throughput_rps"]
            results[f"{v2}_over_v1_max_throughput"] = ratio
            print(f"{v2} / v1 REST maximum throughput: {ratio:.2f}x")
    if "v2" in s and "v2fleet" in s:
        at = lambda k: next(r for r in s[k]["runs"] if r["rate"] == 200.0)  # noqa: E731
        results["fleet"] = {
            "keys": FLEET_KEYS, "keys_per_request": KEYS_PER_REQUEST,
            "rss_above_one_model_mb": s["v2fleet"]["rss_mb"] - s["v2"]["rss_mb"],
            "rss_after_traffic_above_one_model_mb":
                s["v2fleet"]["rss_after_mb"] - s["v2"]["rss_after_mb"],
            "p99_at_200_over_one_model": at("v2fleet")["p99_ms"] / at("v2")["p99_ms"]}
        f = results["fleet"]
        print(f"fleet of {FLEET_KEYS} keys: RSS {f['rss_above_one_model_mb']:+.1f} MB above "
              f"the one-model server before traffic, "
              f"{f['rss_after_traffic_above_one_model_mb']:+.1f} MB after; p99 at 200 req/s {f['p99_at_200_over_one_model']:.2f}x",
              flush=True)
    write_json(a.out, results)


def _stage_fleet(target: str) -> None:
    """A 10,000-key gamma fleet (50 rows per key), staged as the OIP server loads it."""
    import pandas as pd

    import mleops
    from mleops.fleet_artifact import FleetArtifact
    from mleops.serving.service import stage_fleet

    rng = np.random.default_rng(2)
    df = pd.DataFrame({"key": np.repeat([f"k{i}" for i in range(FLEET_KEYS)], 50),
                       "x": rng.gamma(2.0, 1.5, 50 * FLEET_KEYS)})
    art = FleetArtifact.from_fleet(mleops.fit_fleet(df, "gamma", key="key", column="x"))
    stage_fleet(art, target, name="fleet", version="1")


def _rss_mb(pid: int) -> float:
    """Resident memory of the server's process tree (MB)."""
    import psutil

    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2 ** 20


def _wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


if __name__ == "__main__":
    main()
