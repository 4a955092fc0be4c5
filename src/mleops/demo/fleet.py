"""The demo's fleet act: 200 endpoints' latency models as one registered version.

Week 1's data fits every endpoint at once and registers the fleet; week 2's data comes from a
collector that lost the slowest requests on 6 endpoints. The fleet gate compares week 2's
candidate with the champion key by key on a golden validation set, finds those 6 worse (at a
5% false discovery rate across the 200), and registers the merge: the 6 keep week 1's
parameters, the other 194 move to week 2's.
"""

from __future__ import annotations

import os

import numpy as np

NAME = "endpoint-latency"
KEYS, ROWS, LOSSY = 200, 300, 6
TIMEOUT = 2.0


def _write(path: str, rng, scale: np.ndarray, drop: np.ndarray) -> str:
    """Weibull latencies per endpoint, censored at the timeout; ``drop``: share of each
    endpoint's slowest requests the collector lost."""
    import pandas as pd

    parts = []
    for i in range(KEYS):
        t = scale[i] * rng.weibull(1.5, ROWS)
        if drop[i]:
            t = t[t < np.quantile(t, 1 - drop[i])]
        parts.append(pd.DataFrame({"endpoint": f"/api/v1/e{i:03d}",
                                   "latency_s": np.minimum(t, TIMEOUT),
                                   "completed": (t <= TIMEOUT).astype(int)}))
    pd.concat(parts, ignore_index=True).to_parquet(path)
    return path


def fleet_act(root: str, tracking: str, pipeline) -> list[str]:
    """Run the act; the lines it narrates. ``pipeline(req, label)`` runs one pipeline."""
    from mleops.pipeline.runner import RunRequest
    from mleops.registry import Registry

    rng = np.random.default_rng(11)
    scale = rng.uniform(0.2, 0.8, KEYS)
    none, lossy = np.zeros(KEYS), np.zeros(KEYS)
    lossy[rng.choice(KEYS, LOSSY, replace=False)] = 0.15
    path = lambda f: os.path.join(root, f)  # noqa: E731
    data = {k: _write(path(f"fleet_{k}.parquet"), rng, scale, d)
            for k, d in (("week1", none), ("golden", none), ("week2", lossy))}
    base = dict(family="weibull", model_name=NAME, column="latency_s",
                censor_column="completed", key_column="endpoint", tracking_uri=tracking,
                validation_data_uri=data["golden"])
    first = pipeline(RunRequest(data_uri=data["week1"], **base), "fleet week1")
    second = pipeline(RunRequest(data_uri=data["week2"], **base), "fleet week2")
    version, fleet = Registry(tracking).load_fleet(NAME, second["registered_version"])
    kept = sorted(k[0] for k, v in zip(fleet.key_tuples(), fleet.source_version) if v)
    truth = sorted(f"/api/v1/e{i:03d}" for i in np.flatnonzero(lossy))
    return [f"week1: {KEYS} endpoints fitted in one call -> registered v"
            f"{first['registered_version']} (one version, {KEYS} keys)",
            f"week2 (a collector lost the slowest 15% on {LOSSY} endpoints): "
            + second["gate"]["reasons"][0],
            f"registered v{version}, a merge: {len(kept)} endpoints keep v"
            f"{first['registered_version']}'s parameters ({', '.join(kept)}), "
            f"{KEYS - len(kept)} take week2's",
            f"the lossy endpoints were {', '.join(truth)}: "
            + ("all found" if kept == truth else "see mleops models show --keys"),
            f"per key: mleops models show {NAME} --keys --tracking-uri {tracking}"]


__all__ = ["fleet_act"]
