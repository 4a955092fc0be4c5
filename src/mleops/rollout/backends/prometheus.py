"""Rollout evidence from Prometheus: the model servers' own counters, whoever moves traffic.

Live log-likelihood comes from the servers' cumulative ``mleops_rows_total`` /
``mleops_loglik_sum`` / ``mleops_loglik_sq_sum`` per registered version, read per series
(pod x worker x method): the cursor keeps each series' last values and the test gets the
increments (a series that went down restarted with its process: its new values are the
increment; a sum over pods could not tell); each tick's increments are one block, so the arms
are compared within the same interval. Sums cannot be paired row by row, so shadow mode is
analysed as two independent samples (conservative). The Kubernetes backend reads errors and
p99 latency from Seldon's executor metrics (``executor``); the local router reports its own.

If Prometheus cannot be read the read raises ``RolloutError`` and the cursor stays: the
controller holds (no block, no decision) and reads again next tick. A series missing from
one answer (a failed scrape, partial results) adds nothing that tick; when it is back, its
increment since its last seen values counts. An outage or partial answer can delay a
decision but not lose rows, count them twice, or make a decision on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mleops.prometheus import query_prometheus
from mleops.rollout.backends.base import RolloutError
from mleops.rollout.kernels.statistics import Summary

EXECUTOR = "seldon_api_executor_server_requests_seconds"
# per-series cumulative values read each tick (gauges and counters flushed together)
SERIES = ("mleops_rows_total", "mleops_loglik_sum", "mleops_loglik_sq_sum",
          "mleops_rows_outside_support_total", "mleops_failed_requests_total")
ARMS = ("canary", "champion")
FAILED = SERIES.index("mleops_failed_requests_total")
# the counters among a series' columns (the sums are gauges, and a log-likelihood sum falls):
# the mleops counters, then the executor's requests and errors
COUNTER_COLUMNS = [i for i, s in enumerate(SERIES) if s.endswith("_total")] + [
    len(SERIES), len(SERIES) + 1]


class PrometheusEvidence:
    """Per-version likelihood sums of ``model`` from the Prometheus HTTP API at ``url``.

    ``labels`` narrow every query (``namespace`` on a cluster, a ``job`` locally);
    ``executor`` is the label selector of the canary's request-latency histogram (Seldon's
    executor by default; ``executor_metric`` names another), when requests, errors and
    latency come from there too. ``errors`` selects the failed requests among them (None:
    the histogram tells no status, so the errors are the requests the canary's own servers
    failed, ``mleops_failed_requests_total``: their 5xx, not a proxy's in front of them);
    with ``by_pod`` the histogram carries no version label and is kept only on pods whose
    mleops series are the canary's.
    """

    def __init__(self, url: str, model: str, *, labels: dict[str, str] | None = None,
                 executor: str = "", executor_metric: str = EXECUTOR,
                 errors: str | None = 'code=~"5.."', by_pod: bool = False,
                 clock: Callable[[], float] = time.time):
        self.url, self.model, self.labels = url, model, dict(labels or {})
        self.executor, self.clock = executor, clock
        self.metric, self.errors, self.by_pod = executor_metric, errors, by_pod

    def describe(self) -> dict[str, Any]:
        return {"prometheus": self.url, "labels": self.labels, "executor": self.executor}

    def _vector(self, promql: str, at: float) -> list[tuple[dict, float]]:
        try:
            res = query_prometheus(self.url, promql, at=at)
        except Exception as e:  # unreachable, HTTP error, bad answer: hold, don't decide
            raise RolloutError(f"Prometheus at {self.url}: {e}") from None
        rows = [({}, res)] if isinstance(res, float) else res
        return [(labels, v) for labels, v in rows if np.isfinite(v)]

    def _selector(self, version: str) -> str:
        return ",".join([*(f'{k}="{v}"' for k, v in self.labels.items()),
                         f'registered_model="{self.model}"', f'registered_version="{version}"'])

    def _join(self, canary: str) -> str:
        """`` * on (namespace, pod) ...``: keeps executor series on the canary's pods."""
        if not self.by_pod:
            return ""
        return (f" * on (namespace, pod) group_left () count by (namespace, pod) "
                f"({SERIES[0]}{{{self._selector(canary)}}})")

    def series(self, canary: str, champion: str) -> dict[str, dict[str, list[float]]]:
        """Cumulative values of every series, by arm and series key."""
        at = self.clock()
        out: dict[str, dict[str, list[float]]] = {}
        width = len(SERIES) + 2
        for arm, version in (("canary", canary), ("champion", champion)):
            sel = self._selector(version)
            table: dict[str, list[float]] = {}
            for i, metric in enumerate(SERIES):
                for labels, value in self._vector(f"{metric}{{{sel}}}", at):
                    table.setdefault(_key(labels), [0.0] * width)[i] = value
            out[arm] = table
        if self.executor:
            queries = [f"{self.metric}_count{{{self.executor}}}"]
            if self.errors:
                queries.append(f"{self.metric}_count{{{self.executor},{self.errors}}}")
            for i, promql in enumerate(queries):
                for labels, value in self._vector(promql + self._join(canary), at):
                    out["canary"].setdefault("executor:" + _key(labels),
                                             [0.0] * width)[len(SERIES) + i] = value
        return out

    def start(self, canary: str, champion: str) -> dict[str, Any]:
        """The cursor: every series' values now (what earlier traffic left)."""
        return {"series": self.series(canary, champion), "acc": {}}

    def read(self, canary: str, champion: str, cursor: dict[str, Any]
             ) -> tuple[dict[str, Summary], dict[str, dict[str, Any]], dict[str, Any]]:
        """(sums per arm for this tick's block, accumulated arm counters, the new cursor)."""
        now = self.series(canary, champion)
        before, acc = cursor.get("series", {}), dict(cursor.get("acc", {}))
        sums = {}
        for arm in ARMS:
            inc = np.zeros(len(SERIES) + 2)
            for key, values in now[arm].items():
                old = _aligned(before.get(arm, {}).get(key), values)
                v = np.asarray(values)
                # a counter that went down restarted (its process did): its new value is new
                inc += v if old is None or (v[COUNTER_COLUMNS] < old[COUNTER_COLUMNS]).any() else v - old
            n, s, ss, outside, failed, requests, errors = inc
            sums[arm] = Summary(n, s, max(ss, 0.0))
            for k, v in (("rows", n), ("outside", outside), ("failed", failed),
                         ("requests", requests), ("errors", errors)):
                acc[f"{arm}_{k}"] = acc.get(f"{arm}_{k}", 0.0) + float(v)
        arms = {arm: {"rows": acc[f"{arm}_rows"], "outside_support_rate": acc[f"{arm}_outside"]
                      / max(acc[f"{arm}_rows"] + acc[f"{arm}_outside"], 1.0)}
                for arm in ARMS}
        if self.executor:
            arms["canary"].update(requests=acc["canary_requests"], p99_ms=self.p99(canary))
            arms["canary"].update(
                errors=acc["canary_errors" if self.errors else "canary_failed"],
                error_basis=f"errors: {self.errors} at {self.metric}" if self.errors else
                "errors: requests the canary's model servers failed (their own 5xx)")
        # a series absent from this answer keeps its last values: when it is back, only its
        # increment since then counts (forgetting it would count its whole total again)
        kept = {arm: {**before.get(arm, {}), **now[arm]} for arm in ARMS}
        return sums, arms, {"series": kept, "acc": acc}

    def p99(self, canary: str = "") -> float | None:
        rows = self._vector(f"histogram_quantile(0.99, sum by (le) "
                            f"(rate({self.metric}_bucket{{{self.executor}}}[2m])"
                            f"{self._join(canary)}))", self.clock())
        return 1000.0 * rows[0][1] if rows else None


def _aligned(old: list[float] | None, values: list[float]) -> np.ndarray | None:
    """A cursor's values in this layout. A cursor written before ``failed`` was a series
    (one column fewer) gets the failed count read now: no increment, not the whole total."""
    if old is None:
        return None
    if len(old) == len(values) - 1:
        old = [*old[:FAILED], values[FAILED], *old[FAILED:]]
    return np.asarray(old)


def _key(labels: dict) -> str:
    """One series' identity (its labels but the metric name), as a JSON-safe string."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")

__all__ = ["PrometheusEvidence"]
