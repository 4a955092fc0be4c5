"""The Kubernetes backend: SeldonDeployment traffic through the API, metrics from Prometheus.

Traffic moves by patching the predictors' ``traffic`` (:func:`mleops.deploy.set_traffic`,
guarded by resourceVersion); the canary predictor is rendered by the same code as every other
manifest and validated against the CRD before it is applied. The evidence is read from
Prometheus by :class:`~mleops.rollout.backends.prometheus.PrometheusEvidence` (per-version
likelihood sums, per series, restarts included), errors and p99 latency from Seldon's executor
metrics for the canary predictor. Sums cannot be paired row by row, so shadow mode is analysed
as two independent samples here (conservative); the local router pairs rows exactly.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from mleops.deploy.apply import (
    DeployError,
    apply_manifest,
    create_object,
    custom_objects_api,
    get_object,
    patch_object,
    set_traffic,
)
from mleops.deploy.k8s import Resource
from mleops.deploy.seldon import (
    CANARY,
    MAIN,
    SELDON,
    deployment_name,
    model_artifact_uri,
    render_seldon_deployment,
)
from mleops.deploy.seldon import validate_manifest as _validate
from mleops.rollout.backends.base import Observation, RolloutError
from mleops.rollout.backends.prometheus import PrometheusEvidence
from mleops.rollout.state.store import ANNOTATION, RolloutState, check_name


class KubernetesBackend:
    """Drives SeldonDeployment ``deployment`` in ``namespace`` for registered model ``model``."""

    pairs_rows = False  # Prometheus sums cannot be paired row by row: shadow is unpaired here

    def __init__(self, model: str, namespace: str, prometheus_url: str, *, registry=None,
                 api=None, deployment: str = "", artifacts_destination: str = "",
                 render_options: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.model, self.namespace, self.prometheus = model, namespace, prometheus_url
        self.deployment = deployment or deployment_name(model)
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
            from mleops.registry import Registry

            self.registry = Registry()
        return model_artifact_uri(self.registry, self.model, version,
                                  artifacts_destination=self.artifacts_destination or None)

    def _render(self, version: str, canary: str | None = None, shadow: bool = False,
                canary_traffic: int = 0) -> dict:
        manifest = render_seldon_deployment(
            self.deployment, model_name=self.model, version=version,
            model_uri=self._uri(version), canary_version=canary,
            canary_model_uri=self._uri(canary) if canary else None,
            canary_traffic=canary_traffic,
            shadow=shadow, namespace=self.namespace, **self.render_options)
        _validate(manifest)
        return manifest

    def deploy_canary(self, state: RolloutState) -> None:
        """The canary predictor (validated, applied) and the metrics' starting totals. A
        split canary starts at 0%; a shadow at its first step (Seldon mirrors *every*
        request to a shadow whose traffic is 0)."""
        first = state.steps[0] if state.mode == "shadow" else 0
        apply_manifest(self._render(state.champion_version, state.candidate_version,
                                    shadow=state.mode == "shadow", canary_traffic=first),
                       api=self.api)
        state.cursor = self.evidence.start(state.candidate_version, state.champion_version)

    def set_weight(self, state: RolloutState) -> None:
        w = state.weight
        if state.mode == "shadow" and w == 0:
            raise RolloutError("a shadow at 0% would mirror every request: remove it instead")
        weights = {CANARY: w} if state.mode == "shadow" else {MAIN: 100 - w, CANARY: w}
        set_traffic(self.deployment, self.namespace, weights, api=self.api)

    def rollback(self, state: RolloutState) -> None:
        """Split: the canary's traffic to 0 (kept for inspection). Shadow: the champion-only
        manifest, since a 0% shadow would still receive every request."""
        state.weight = 0
        if state.mode == "shadow":
            apply_manifest(self._render(state.champion_version), api=self.api)
        else:
            self.set_weight(state)

    def promote(self, state: RolloutState) -> None:
        """The candidate becomes the only predictor (Seldon rolls the pods)."""
        apply_manifest(self._render(state.candidate_version), api=self.api)

    # --- metrics (mleops.rollout.backends.prometheus) ---------------------------------------
    @property
    def evidence(self) -> PrometheusEvidence:
        executor = (f'namespace="{self.namespace}",deployment_name="{self.deployment}",'
                    f'predictor_name="{CANARY}"')
        return PrometheusEvidence(self.prometheus, self.model,
                                  labels={"namespace": self.namespace}, executor=executor,
                                  clock=self.clock)

    def read(self, state: RolloutState) -> Observation:
        sums, arms, state.cursor = self.evidence.read(state.candidate_version,
                                                      state.champion_version, state.cursor)
        empty = np.zeros(0)
        return Observation(empty, empty, canary_sums=sums["canary"],
                           champion_sums=sums["champion"], arms=arms)


class AnnotationStateStore:
    """The state as a JSON annotation on the object serving the model (by default its
    SeldonDeployment; ``resource`` names another kind).

    The backend patches the same object (traffic, predictors), so a save re-reads it and
    patches with its current ``resourceVersion``; a different controller's write since our
    load (its ``updated_at`` in the annotation differs from the one we read) is refused
    instead of overwritten. ``locked`` is a no-op: the API server orders the writes. With
    ``create`` (name -> manifest) a missing object is created on the first save instead of
    refused: for a holder object apart from what serves the model.
    """

    def __init__(self, namespace: str, *, api=None, deployment_of=None,
                 resource: Resource = SELDON, create: Callable[[str], dict] | None = None):
        self.namespace, self.api = namespace, api
        self.deployment_of = deployment_of or deployment_name
        self.resource, self.create = resource, create
        self._seen: dict[str, float | None] = {}

    def _api(self):
        self.api = self.api or custom_objects_api()
        return self.api

    def _read(self, name: str) -> tuple[dict | None, RolloutState | None]:
        obj = get_object(self._api(), self.namespace, self.deployment_of(check_name(name)),
                         resource=self.resource)
        raw = ((obj or {}).get("metadata") or {}).get("annotations", {}) or {}
        raw = raw.get(ANNOTATION)
        return obj, RolloutState.from_dict(json.loads(raw)) if raw else None

    def load(self, name: str) -> RolloutState | None:
        _, state = self._read(name)
        self._seen[name] = state.updated_at if state else None
        return state

    def save(self, state: RolloutState) -> None:
        obj, stored = self._read(state.name)
        where = f"{self.namespace}/{self.deployment_of(state.name)}"
        if obj is None and self.create is None:
            raise DeployError(f"cannot save rollout state: no {self.resource.kind} {where}")
        seen = self._seen.get(state.name, stored.updated_at if stored else None)
        if (stored.updated_at if stored else None) != seen:
            raise DeployError(f"rollout state on {where} was changed by another writer "
                              "since it was read; not overwritten")
        state.updated_at = time.time()
        annotations = {ANNOTATION: json.dumps(state.to_dict(), sort_keys=True)}
        if obj is None:  # a holder object of our own: created with the first state
            body = self.create(self.deployment_of(state.name))
            body.setdefault("metadata", {})["annotations"] = annotations
            create_object(self._api(), self.namespace, body, resource=self.resource)
        else:
            meta = {"annotations": annotations,
                    "resourceVersion": obj["metadata"].get("resourceVersion")}
            patch_object(self._api(), self.namespace, self.deployment_of(state.name),
                         {"metadata": meta}, "saving rollout state", resource=self.resource)
        self._seen[state.name] = state.updated_at

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        yield


__all__ = ["AnnotationStateStore", "KubernetesBackend"]
