"""The Kubernetes backend: SeldonDeployment traffic through the API, metrics from Prometheus.

Traffic moves by patching the predictors' ``traffic`` (:func:`mleops.deploy.set_traffic`,
guarded by resourceVersion); the canary predictor is rendered by the same code as every other
manifest and validated against the CRD before it is applied. Live log-likelihood comes from the
model servers' cumulative ``mleops_rows_total`` / ``mleops_loglik_sum`` /
``mleops_loglik_sq_sum`` per registered version: the controller keeps the last totals in its
cursor and feeds the test the increments (a counter that went down means a pod restarted: its
new totals are the increment). Sums cannot be paired row by row, so shadow mode is analysed
as two independent samples here (conservative); the local router pairs rows exactly.
Errors and p99 latency come from Seldon's executor metrics for the canary predictor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..deploy.apply import apply_manifest, set_traffic
from ..deploy.manifest import CANARY, MAIN, model_artifact_uri, render_seldon_deployment
from ..deploy.manifest import validate_manifest as _validate
from ..monitor import prometheus_totals, query_prometheus
from .controller import Observation
from .state import RolloutState
from .statistics import Summary

EXECUTOR = "seldon_api_executor_server_requests_seconds"


class KubernetesBackend:
    """Drives SeldonDeployment ``deployment`` in ``namespace`` for registered model ``model``."""

    def __init__(self, model: str, namespace: str, prometheus_url: str, *, registry=None,
                 api=None, deployment: str = "", artifacts_destination: str = "",
                 render_options: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.model, self.namespace, self.prometheus = model, namespace, prometheus_url
        self.deployment = deployment or model.lower().replace("_", "-")
        self.registry, self.api, self.clock = registry, api, clock
        self.artifacts_destination = artifacts_destination
        self.render_options = dict(render_options or {})

    def describe(self) -> dict[str, Any]:
        return {"kind": "kubernetes", "model": self.model, "namespace": self.namespace,
                "prometheus": self.prometheus, "deployment": self.deployment,
                "artifacts_destination": self.artifacts_destination,
                "render_options": self.render_options}

    @classmethod
    def from_description(cls, desc: dict[str, Any], **kwargs) -> KubernetesBackend:
        return cls(desc["model"], desc["namespace"], desc["prometheus"],
                   deployment=desc.get("deployment", ""),
                   artifacts_destination=desc.get("artifacts_destination", ""),
                   render_options=desc.get("render_options"), **kwargs)

    # --- traffic -------------------------------------------------------------------------
    def _uri(self, version: str) -> str:
        if self.registry is None:
            from ..registry import Registry

            self.registry = Registry()
        return model_artifact_uri(self.registry, self.model, version,
                                  artifacts_destination=self.artifacts_destination or None)

    def _render(self, version: str, canary: str | None = None, shadow: bool = False) -> dict:
        manifest = render_seldon_deployment(
            self.deployment, model_name=self.model, version=version,
            model_uri=self._uri(version), canary_version=canary,
            canary_model_uri=self._uri(canary) if canary else None, canary_traffic=0,
            shadow=shadow, namespace=self.namespace, **self.render_options)
        _validate(manifest)
        return manifest

    def deploy_canary(self, state: RolloutState) -> None:
        """The canary predictor at 0% (validated, applied), and the metrics' starting totals."""
        apply_manifest(self._render(state.champion_version, state.candidate_version,
                                    shadow=state.mode == "shadow"), api=self.api)
        state.cursor = self._totals(state)

    def set_weight(self, state: RolloutState) -> None:
        w = state.weight
        weights = {CANARY: w} if state.mode == "shadow" else {MAIN: 100 - w, CANARY: w}
        set_traffic(self.deployment, self.namespace, weights, api=self.api)

    def rollback(self, state: RolloutState) -> None:
        state.weight = 0
        self.set_weight(state)

    def promote(self, state: RolloutState) -> None:
        """The candidate becomes the only predictor (Seldon rolls the pods)."""
        apply_manifest(self._render(state.candidate_version), api=self.api)

    # --- metrics -------------------------------------------------------------------------
    def _selector(self, predictor: str) -> str:
        return (f'namespace="{self.namespace}",deployment_name="{self.deployment}",'
                f'predictor_name="{predictor}"')

    def _scalar(self, promql: str, at: float) -> float:
        res = query_prometheus(self.prometheus, promql, at=at)
        values = [res] if isinstance(res, float) else [v for _, v in res]
        return float(sum(v for v in values if np.isfinite(v))) if values else 0.0

    def _totals(self, state: RolloutState) -> dict[str, Any]:
        at = self.clock()
        out: dict[str, Any] = {"at": at}
        for arm, version in (("canary", state.candidate_version),
                             ("champion", state.champion_version)):
            n, s, ss = prometheus_totals(self.prometheus, self.model, version, at=at)
            sel = f'registered_model="{self.model}",registered_version="{version}"'
            outside = self._scalar(f"sum(mleops_rows_outside_support_total{{{sel}}})", at)
            out[arm] = {"n": n, "total": s, "total_sq": ss, "outside": outside}
        sel = self._selector(CANARY)
        out["requests"] = self._scalar(f"sum({EXECUTOR}_count{{{sel}}})", at)
        out["errors"] = self._scalar(f'sum({EXECUTOR}_count{{{sel},code=~"5.."}})', at)
        return out

    def read(self, state: RolloutState) -> Observation:
        before, now = state.cursor, self._totals(state)
        sums, arms = {}, {}
        for arm in ("canary", "champion"):
            a, b = now[arm], before.get(arm, {})
            reset = a["n"] < b.get("n", 0)  # a pod restarted: its counters began again
            base = {} if reset else b
            sums[arm] = Summary(a["n"], a["total"], a["total_sq"]) - Summary(
                base.get("n", 0.0), base.get("total", 0.0), base.get("total_sq", 0.0))
            seen = a["n"] - (0 if reset else b.get("n", 0)) + a["outside"] - base.get(
                "outside", 0)
            arms[arm] = {"rows": a["n"], "outside_support_rate":
                         (a["outside"] - base.get("outside", 0)) / seen if seen > 0 else 0.0}
        start = state.cursor.get("start") or before
        arms["canary"].update(requests=now["requests"] - start.get("requests", 0),
                              errors=now["errors"] - start.get("errors", 0),
                              p99_ms=self._p99(now["at"]))
        state.cursor = {**now, "start": start}
        empty = np.zeros(0)
        return Observation(empty, empty, canary_sums=sums["canary"],
                           champion_sums=sums["champion"], arms=arms)

    def _p99(self, at: float) -> float | None:
        res = query_prometheus(
            self.prometheus, f"histogram_quantile(0.99, sum by (le) "
            f"(rate({EXECUTOR}_bucket{{{self._selector(CANARY)}}}[2m])))", at=at)
        values = [res] if isinstance(res, float) else [v for _, v in res]
        finite = [v for v in values if np.isfinite(v)]
        return 1000.0 * finite[0] if finite else None


__all__ = ["KubernetesBackend"]
