"""``make demo``: the main job end to end on embedded defaults, no cluster, no servers.

Simulates request latencies (Weibull, right-censored at a client timeout), then drives the
real training pipeline (kfp local runner) against an embedded MLflow store, the way CI does:
the first model becomes champion, a candidate trained on a lossy collector's data (slow
requests dropped) is rejected by the gate, a candidate trained on more good data becomes
challenger and is promoted. Everything lands under ``.mleops/demo`` (override with
``MLEOPS_DEMO_DIR``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys

import numpy as np

TRUE_SHAPE, TRUE_SCALE, TIMEOUT = 1.4, 0.35, 0.8


def latency_table(path: str, n: int, seed: int, *, drop_slowest: float = 0.0) -> str:
    """CSV of latencies (seconds) and a completed flag (0 = hit the client timeout)."""
    rng = np.random.default_rng(seed)
    t = TRUE_SCALE * rng.weibull(TRUE_SHAPE, n)
    if drop_slowest:
        t = t[t < np.quantile(t, 1 - drop_slowest)]
    done = (t <= TIMEOUT).astype(int)
    np.savetxt(path, np.column_stack([np.minimum(t, TIMEOUT), done]), delimiter=",",
               header="latency_s,completed", comments="", fmt=["%.8g", "%d"])
    return path


def _run(req, root: str) -> dict:
    from .pipeline.runner import run_pipeline

    with contextlib.redirect_stdout(open(os.path.join(root, "pipeline.log"), "a")):
        return run_pipeline(req, pipeline_root=os.path.join(root, "kfp"))


def main() -> None:
    from .pipeline.runner import RunRequest
    from .registry import Registry

    root = os.path.abspath(os.environ.get("MLEOPS_DEMO_DIR", os.path.join(".mleops", "demo")))
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    tracking = f"sqlite:///{os.path.join(root, 'mlflow.db')}"
    data = {
        "golden": latency_table(os.path.join(root, "golden.csv"), 5000, 1),
        "week1": latency_table(os.path.join(root, "week1.csv"), 3000, 2),
        "lossy": latency_table(os.path.join(root, "lossy.csv"), 6000, 3, drop_slowest=0.1),
        "week2": latency_table(os.path.join(root, "week2.csv"), 20000, 4),
    }
    print(f"demo directory: {root}\ntracking store: {tracking}\n")
    base = dict(family="weibull", model_name="request-latency", column="latency_s",
                censor_column="completed", validation_data_uri=data["golden"],
                tracking_uri=tracking)
    for label in ("week1", "lossy", "week2"):
        res = _run(RunRequest(data_uri=data[label], **base), root)
        g = res["gate"]
        print(f"[{label}] gate {'PASSED' if g['passed'] else 'REJECTED'}; registered version: "
              f"{res['registered_version']}")
        for reason in g["reasons"]:
            print(f"    - {reason}")
    reg = Registry(tracking)
    versions = reg.list_versions("request-latency")
    challenger = [v for v in versions if "challenger" in v["aliases"]]
    if challenger:
        reg.promote("request-latency", challenger[0]["version"])
        print(f"\npromoted version {challenger[0]['version']} to champion")
    version, art = reg.champion("request-latency")
    print(f"champion: version {version}: " + json.dumps(
        {k: round(v, 4) for k, v in art.params.items()}) +
        f" (truth: shape={TRUE_SHAPE}, scale={TRUE_SCALE})")
    print("\nversions:")
    for v in reg.list_versions("request-latency"):
        print(f"  v{v['version']}: aliases={v['aliases']} data={v['tags'].get('mleops.data_hash', '')[:12]}")
    print(f"\nreports and logs under {root}")


if __name__ == "__main__":
    sys.exit(main())
