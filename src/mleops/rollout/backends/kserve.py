"""The KServe backend: an InferenceService's canary through the API, metrics from Prometheus.

How each step maps onto KServe (:mod:`mleops.deploy.kserve` says which field each mode needs):

| step | Serverless / Knative | Standard (KServe >= 0.20) |
|---|---|---|
| deploy_canary | predictor = candidate, ``canaryTrafficPercent: 0`` | ``spec.canary[0]`` = candidate at 0 |
| set_weight | patch ``canaryTrafficPercent`` | patch the entry's ``trafficPercent`` |
| rollback | ``canaryTrafficPercent: 0`` (KServe pins the previous revision) | drop the entry |
| promote | drop ``canaryTrafficPercent`` (same spec: no new revision) | stable predictor := candidate |

Every patch is guarded by the object's ``resourceVersion`` (re-read on a conflict). Serverless
rollback keeps the candidate's spec at 0%: putting the champion's spec back in the same patch
would make a new revision while KServe still counts the canary as rolled out after a 100% step.
The state lives on a Lease named after the InferenceService, not on the InferenceService:
KServe copies an InferenceService's annotations into every pod template, so a state written
each tick would start a new revision (or restart every pod) each tick. Likelihood evidence
comes from the mleops series (per version); requests and p99 latency from KServe's model
server histogram ``request_predict_seconds`` on the canary's pods (it has no status label,
so no error rate here). KServe mirrors no traffic: shadow mode is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mleops.deploy.apply import apply_manifest, custom_objects_api, update_object
from mleops.deploy.k8s import Resource
from mleops.deploy.kserve import (
    ISVC,
    REVISIONS,
    SERVERLESS,
    canary_field,
    predictor_name,
    render_inference_service,
    validate_inference_service,
)
from mleops.deploy.seldon import LABEL_VERSION, deployment_name, model_artifact_uri
from mleops.rollout.backends.base import Observation, RolloutError
from mleops.rollout.backends.kubernetes import AnnotationStateStore
from mleops.rollout.backends.prometheus import PrometheusEvidence
from mleops.rollout.state.store import RolloutState

LEASE = Resource("coordination.k8s.io", "v1", "leases", "Lease")
LATENCY = "request_predict_seconds"  # kserve.metrics: a histogram labelled model_name


def lease_manifest(name: str) -> dict:
    """The Lease that holds a rollout's state (an annotation on it)."""
    return {"apiVersion": LEASE.api_version, "kind": LEASE.kind,
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "mleops"}},
            "spec": {}}


def state_store(namespace: str, *, api=None) -> AnnotationStateStore:
    """Rollout states of KServe-served models: on a Lease per InferenceService."""
    return AnnotationStateStore(namespace, api=api, resource=LEASE, create=lease_manifest)


class KServeBackend:
    """Drives InferenceService ``service`` in ``namespace`` for registered model ``model``."""

    pairs_rows = False  # Prometheus sums cannot be paired row by row

    def __init__(self, model: str, namespace: str, prometheus_url: str, *, registry=None,
                 api=None, service: str = "", deployment_mode: str = SERVERLESS,
                 artifacts_destination: str = "",
                 render_options: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.time):
        canary_field(deployment_mode)  # DeployError now for a mode that splits nothing
        self.model, self.namespace, self.prometheus = model, namespace, prometheus_url
        self.service = service or deployment_name(model)
        self.mode, self.registry, self.api, self.clock = deployment_mode, registry, api, clock
        self.artifacts_destination = artifacts_destination
        self.render_options = dict(render_options or {})

    def describe(self) -> dict[str, Any]:
        return {"kind": "kserve", "model": self.model, "namespace": self.namespace,
                "prometheus": self.prometheus, "service": self.service,
                "deployment_mode": self.mode,
                "artifacts_destination": self.artifacts_destination,
                "render_options": self.render_options}

    @classmethod
    def from_description(cls, desc: dict[str, Any], **kwargs) -> KServeBackend:
        return cls(desc["model"], desc["namespace"], desc["prometheus"],
                   service=desc.get("service", ""),
                   deployment_mode=desc.get("deployment_mode", SERVERLESS),
                   artifacts_destination=desc.get("artifacts_destination", ""),
                   render_options=desc.get("render_options"), **kwargs)

    # --- traffic -------------------------------------------------------------------------
    def _uri(self, version: str) -> str:
        if self.registry is None:
            from mleops.registry import Registry

            self.registry = Registry()
        return model_artifact_uri(self.registry, self.model, version,
                                  artifacts_destination=self.artifacts_destination or None)

    def _apply(self, version: str, canary: str | None = None) -> None:
        manifest = render_inference_service(
            self.service, model_name=self.model, version=version, model_uri=self._uri(version),
            canary_version=canary, canary_model_uri=self._uri(canary) if canary else None,
            namespace=self.namespace, deployment_mode=self.mode, **self.render_options)
        apply_manifest(validate_inference_service(manifest), api=self._api())

    def _api(self):
        self.api = self.api or custom_objects_api()
        return self.api

    def deploy_canary(self, state: RolloutState) -> None:
        """The candidate at 0% (validated, applied) and the metrics' starting totals."""
        if state.mode != "split":
            raise RolloutError("KServe mirrors no traffic: shadow mode needs the Seldon "
                               "backend or the local router; use --mode split")
        self._apply(state.champion_version, state.candidate_version)
        state.cursor = self.evidence.start(state.candidate_version, state.champion_version)

    def _weight(self, candidate: str, weight: int) -> None:
        """The candidate's share, patched only where the live object still serves it."""
        where = f"InferenceService {self.namespace}/{self.service}"

        def change(current: dict) -> dict | None:
            spec = current.get("spec") or {}
            pred = spec.get("predictor") or {}
            if self.mode in REVISIONS:
                if (pred.get("labels") or {}).get(LABEL_VERSION) != candidate:
                    raise RolloutError(f"{where} does not serve candidate version {candidate}")
                if pred.get("canaryTrafficPercent") == weight:
                    return None
                return {"spec": {"predictor": {"canaryTrafficPercent": weight}}}
            name = predictor_name(candidate)
            canaries = [dict(c) for c in spec.get("canary") or []]
            mine = [c for c in canaries if (c.get("predictor") or {}).get("name") == name]
            if not mine:
                raise RolloutError(f"{where} has no canary {name!r} (candidate {candidate})")
            if mine[0].get("trafficPercent") == weight:
                return None
            mine[0]["trafficPercent"] = weight  # the list is atomic: sent whole
            return {"spec": {"canary": canaries}}

        update_object(self._api(), self.namespace, self.service, change,
                      f"setting canary traffic {weight}%", resource=ISVC)

    def set_weight(self, state: RolloutState) -> None:
        self._weight(state.candidate_version, state.weight)

    def rollback(self, state: RolloutState) -> None:
        """Serverless: the canary's share to 0 (KServe routes all to the previous
        revision). Standard: the champion-only manifest (the canary entry dropped)."""
        state.weight = 0
        if self.mode in REVISIONS:
            self._weight(state.candidate_version, 0)
        else:
            self._apply(state.champion_version)

    def promote(self, state: RolloutState) -> None:
        """The candidate-only manifest: Serverless drops ``canaryTrafficPercent`` from the
        same predictor; Standard makes the candidate the stable predictor."""
        self._apply(state.candidate_version)

    # --- metrics -------------------------------------------------------------------------
    @property
    def evidence(self) -> PrometheusEvidence:
        return PrometheusEvidence(self.prometheus, self.model,
                                  labels={"namespace": self.namespace},
                                  executor=f'namespace="{self.namespace}",'
                                           f'model_name="{self.model}"',
                                  executor_metric=LATENCY, errors=None, by_pod=True,
                                  clock=self.clock)

    def read(self, state: RolloutState) -> Observation:
        sums, arms, state.cursor = self.evidence.read(state.candidate_version,
                                                      state.champion_version, state.cursor)
        empty = np.zeros(0)
        return Observation(empty, empty, canary_sums=sums["canary"],
                           champion_sums=sums["champion"], arms=arms)


__all__ = ["LEASE", "KServeBackend", "lease_manifest", "state_store"]
