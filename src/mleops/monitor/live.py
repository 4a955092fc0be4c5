"""Live windows from Prometheus: the model servers' cumulative totals, differenced per poll.

The monitor owns its PromQL here (``PROM_METRICS`` summed over pods for one registered
version); :mod:`mleops.prometheus` only speaks the HTTP API.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mleops.monitor.cusum import CusumDetector, DriftReport
from mleops.prometheus import query_prometheus

PROM_METRICS = ("mleops_rows_total", "mleops_loglik_sum", "mleops_loglik_sq_sum")


def prometheus_totals(url: str, model: str, version: str, *, timeout: float = 10.0,
                      at: float | None = None) -> tuple[float, float, float]:
    """Cumulative (rows, sum ll, sum ll^2) of one registered version, summed over pods."""
    sel = f'registered_model="{model}",registered_version="{version}"'
    out = []
    for metric in PROM_METRICS:
        res = query_prometheus(url, f"sum({metric}{{{sel}}})", timeout=timeout, at=at)
        out.append(float(res) if isinstance(res, float) else sum(v for _, v in res))
    return out[0], out[1], out[2]


def watch_prometheus(detector: CusumDetector, url: str, model: str, version: str, *,
                     interval: float, duration: float, timeout: float = 10.0,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.time) -> DriftReport:
    """Poll the totals every ``interval`` s for ``duration`` s; stops early on an alarm.

    Each window is the difference of consecutive snapshots. A total going down (a server
    restarted) is no window: the next difference starts from the new totals.
    """
    prev = prometheus_totals(url, model, version, timeout=timeout, at=clock())
    for _ in range(max(1, int(duration // interval))):
        sleep(interval)
        cur = prometheus_totals(url, model, version, timeout=timeout, at=clock())
        d = [c - p for c, p in zip(cur, prev)]
        prev = cur
        if d[0] > 0 and d[2] >= 0:
            detector.update_sums(*d)
        if detector.alarm:
            break
    return detector.report()


__all__ = ["PROM_METRICS", "prometheus_totals", "watch_prometheus"]
