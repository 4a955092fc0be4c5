"""The one factory of rollout backends and state stores: for a new rollout (``open_backend``)
and from a persisted state's description (``backend_from``: resume, status, abort)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from mleops.rollout.backends import kserve
from mleops.rollout.backends.base import Backend, RolloutError
from mleops.rollout.backends.kserve import KServeBackend
from mleops.rollout.backends.kubernetes import AnnotationStateStore, KubernetesBackend
from mleops.rollout.backends.local import LocalBackend, LocalDataPlane
from mleops.rollout.backends.prometheus import PrometheusEvidence
from mleops.rollout.state.store import FileStateStore


def backend_from(desc: dict[str, Any], registry=None) -> Backend:
    """The backend a state's ``backend`` description names (what resume/status/abort reuse)."""
    kind = desc.get("kind")
    if kind == "local":
        ev = desc.get("evidence")
        return LocalBackend(desc["router"], evidence=PrometheusEvidence(
            ev["prometheus"], ev["model"], labels=ev.get("labels")) if ev else None)
    if kind == "kubernetes":
        return KubernetesBackend.from_description(desc, registry=registry)
    if kind == "kserve":
        return KServeBackend.from_description(desc, registry=registry)
    raise RolloutError(f"unknown rollout backend {desc!r}")


def state_store(*, kubernetes: bool = False, namespace: str = "models", state_dir: str = "",
                target: str = "seldon"):
    """Where rollout states live: an annotation on the SeldonDeployment (``target`` "kserve":
    on a Lease beside the InferenceService), or local files."""
    if target == "kserve":
        return kserve.state_store(namespace)
    if kubernetes:
        return AnnotationStateStore(namespace)
    return FileStateStore(state_dir)


@contextlib.contextmanager
def open_backend(name: str, *, registry, kubernetes: bool = False, router_url: str = "",
                 namespace: str = "models", prometheus: str = "",
                 artifacts_destination: str = "", env_secret: str = "",
                 evidence_labels: dict[str, str] | None = None, target: str = "seldon",
                 deployment_mode: str = "Serverless",
                 service_account: str = "", protocol: str = "v2") -> Iterator[Backend]:
    """The backend for a new rollout of model ``name``.

    ``target`` "kserve": the model's InferenceService in ``deployment_mode``, metrics from
    ``prometheus``. Kubernetes: the model's SeldonDeployment, metrics from ``prometheus``. Locally: the
    router at ``router_url``, or, without one, a data plane started here (champion server
    behind a router on 127.0.0.1) that lives as long as the ``with`` block; with
    ``prometheus`` its likelihood evidence comes from there (series matching
    ``evidence_labels``), not from the router's records; its servers speak ``protocol``
    (OIP "v2", or Seldon's "v1").
    """
    if target == "kserve":
        yield KServeBackend(
            name, namespace, prometheus, registry=registry, deployment_mode=deployment_mode,
            artifacts_destination=artifacts_destination,
            render_options={"service_account": service_account} if service_account else None)
        return
    if target != "seldon":
        raise RolloutError(f"rollout target {target!r} is neither 'seldon' nor 'kserve'")
    if kubernetes:
        yield KubernetesBackend(
            name, namespace, prometheus, registry=registry,
            artifacts_destination=artifacts_destination,
            render_options={"env_secret_ref_name": env_secret} if env_secret else None)
        return
    evidence = PrometheusEvidence(prometheus, name, labels=evidence_labels) \
        if prometheus else None
    if router_url:
        yield LocalBackend(router_url, evidence=evidence)
        return
    with LocalDataPlane(name, tracking_uri=registry.uri, protocol=protocol) as plane:
        backend = plane.backend()
        backend.evidence, backend.pairs_rows = evidence, evidence is None
        yield backend


__all__ = ["backend_from", "open_backend", "state_store"]
