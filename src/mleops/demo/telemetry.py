"""Simulated request latencies: lognormal (a heavy right tail), censored at a client timeout.

Every data set of the demo comes from here, each with its own seed, so the demo is the same
on every machine.
"""

from __future__ import annotations

import numpy as np

MU, SIGMA, TIMEOUT = -1.6, 0.7, 2.0  # median 0.20 s; 99.9th percentile 1.8 s
FAMILY = "lognormal"


def latencies(n: int, seed: int, *, slowdown: float = 1.0,
              drop_slowest: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(latency seconds capped at the timeout, completed flag 1/0)."""
    t = slowdown * np.random.default_rng(seed).lognormal(MU, SIGMA, n)
    if drop_slowest:  # a collector that loses the slowest requests (the seed essay's bias)
        t = t[t < np.quantile(t, 1 - drop_slowest)]
    return np.minimum(t, TIMEOUT), (t <= TIMEOUT).astype(int)


def write(path: str, x: np.ndarray, event: np.ndarray, names=("latency_s", "completed")) -> str:
    np.savetxt(path, np.column_stack([x, event]), delimiter=",", header=",".join(names),
               comments="", fmt=["%.8g", "%d"])
    return path


__all__ = ["FAMILY", "MU", "SIGMA", "TIMEOUT", "latencies", "write"]
