"""What a rollout drives (Flagger's pattern): the interface in ``base``, one module per
implementation (``local``: real model servers behind a router on 127.0.0.1; ``kubernetes``:
SeldonDeployment traffic; ``kserve``: InferenceService canaries), the live evidence they read
from Prometheus (``prometheus``), a fleet canary server's per-key counters and routing file
(``fleet_server``), and the ``factory`` that picks one for start and resume.
"""

from mleops.rollout.backends.base import MODES, Backend, RolloutError
from mleops.rollout.backends.factory import backend_from, open_backend, state_store
from mleops.rollout.backends.fleet_server import EvidenceUnavailable, FleetServer
from mleops.rollout.backends.kserve import KServeBackend
from mleops.rollout.backends.kubernetes import AnnotationStateStore, KubernetesBackend
from mleops.rollout.backends.local import LocalBackend, LocalDataPlane
from mleops.rollout.backends.prometheus import PrometheusEvidence

__all__ = ["AnnotationStateStore", "Backend", "EvidenceUnavailable", "FleetServer",
           "KServeBackend", "KubernetesBackend",
           "LocalBackend", "LocalDataPlane", "MODES", "PrometheusEvidence", "RolloutError",
           "backend_from", "open_backend", "state_store"]
