"""Drift monitoring: a CUSUM on windowed log-likelihood (``cusum``) against the champion's
baseline (``baseline``), fed from rows or from Prometheus (``live``); ``check`` is what
``mleops monitor`` does, as library functions."""

from mleops.monitor.baseline import Baseline, model_baseline, registry_baseline
from mleops.monitor.check import MonitorRequest, run_monitor
from mleops.monitor.cusum import (
    CusumConfig,
    CusumDetector,
    DriftReport,
    cusum_threshold,
    monitor_rows,
    monitor_sums,
    siegmund_arl,
    target_arl,
)
from mleops.monitor.live import PROM_METRICS, prometheus_totals, watch_prometheus
from mleops.prometheus import PrometheusError as MonitorError
from mleops.prometheus import query_prometheus

__all__ = ["Baseline", "CusumConfig", "CusumDetector", "DriftReport", "MonitorError",
           "MonitorRequest", "PROM_METRICS", "cusum_threshold", "model_baseline",
           "monitor_rows", "monitor_sums", "prometheus_totals", "query_prometheus",
           "registry_baseline", "run_monitor", "siegmund_arl", "target_arl",
           "watch_prometheus"]
