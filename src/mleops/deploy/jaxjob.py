"""Distributed fits on Kubernetes: Kubeflow ``JAXJob`` manifests and the program their pods run.

A fit too large for one machine runs as a JAXJob (``kubeflow.org/v1``, Kubeflow Training
Operator >= 1.9): ``workers`` pods, one JAX process each, joined by ``jax.distributed``; the
fit streams each process's share of the data's pieces and sums every pass across processes
(:mod:`mleops.fit.stream`); families fitted from several starts (mixtures) run the in-memory
sharded fit instead (``mleops.fit(..., sharded=True)``), whose rows XLA spreads over every
device of every process. The operator tells each pod its rank through
``COORDINATOR_ADDRESS``/``COORDINATOR_PORT``/``NUM_PROCESSES``/``PROCESS_ID``; ``mleops fit
DATA ... --distributed`` reads them (:func:`mleops.fit.sharded.initialize_distributed`),
initialises ``jax.distributed`` and fits; process 0 prints the result as JSON (and writes
``--output``). This module renders and validates manifests only.

Data: ``data_uri`` is copied into the pod by Seldon's rclone storage initializer when it is a
remote URI (``s3://``, ``gs://``, ``https://`` ...; credentials from ``env_secret_ref_name``),
mounted read-only for ``pvc://CLAIM/path``, or used as is for an absolute path already in the
image or a volume. Each process reads only its share (mixtures: the whole table).
Manifests are validated against the real CRD (``mleops/deploy/crds/jaxjob-crd.yaml``) and the
operator's admission rules.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from mleops._version import IMAGE
from mleops.deploy.k8s import (
    DNS1035,
    DNS1123,
    QUANTITY,
    check,
    find_crd,
    validate_against_crd,
)
from mleops.deploy.seldon import STORAGE_INITIALIZER_IMAGE
from mleops.families import family_class

GROUP, API_VERSION, KIND, PLURAL = "kubeflow.org", "v1", "JAXJob", "jaxjobs"
WORKER, CONTAINER, PORT_NAME, DEFAULT_PORT = "Worker", "jax", "jaxjob-port", 6666
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
DATA_MOUNT, DATA_VOLUME = "/mnt/data", "data"
#: ``mleops fit``'s options a JAXJob passes on (tests check them against the command)
FIT_FLAGS = {"column": "--column", "censor_column": "--censor-column",
             "covariates": "--covariates", "threshold": "--threshold",
             "weights_column": "--weights-column", "k": "--components", "method": "--method",
             "output": "--output"}
CRD_ENV, CRD_FILE = "MLEOPS_JAXJOB_CRD", "jaxjob-crd.yaml"


# --- manifests -------------------------------------------------------------------------------
def _data_location(data_uri: str, init_image: str, secret: str | None
                   ) -> tuple[str, list[dict], list[dict], list[dict]]:
    """(path inside the pod, volumes, volume mounts, init containers) for ``data_uri``."""
    check(isinstance(data_uri, str) and bool(data_uri) and data_uri.strip() == data_uri
           and " " not in data_uri, f"data_uri must be a non-empty URI without spaces, "
                                    f"got {data_uri!r}")
    if data_uri.startswith("/"):
        return data_uri, [], [], []
    u = urlparse(data_uri)
    if u.scheme == "pvc":
        path = u.path.strip("/")
        check(bool(DNS1123.fullmatch(u.netloc or "")) and bool(path),
               f"data_uri {data_uri!r} must look like pvc://CLAIM/path/to/file")
        return (f"{DATA_MOUNT}/{path}",
                [{"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": u.netloc,
                                                                 "readOnly": True}}],
                [{"name": DATA_VOLUME, "mountPath": DATA_MOUNT, "readOnly": True}], [])
    name = os.path.basename(u.path.rstrip("/"))
    check(bool(u.scheme) and bool(name), f"data_uri {data_uri!r} is neither an absolute "
           f"path, pvc://CLAIM/path nor a remote file URI (s3://bucket/key.parquet, ...)")
    init = {"name": "data-initializer", "image": init_image, "args": [data_uri, DATA_MOUNT],
            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                          "limits": {"cpu": "1", "memory": "1Gi"}},
            "volumeMounts": [{"name": DATA_VOLUME, "mountPath": DATA_MOUNT}]}
    if secret:
        init["envFrom"] = [{"secretRef": {"name": secret}}]
    return (f"{DATA_MOUNT}/{name}", [{"name": DATA_VOLUME, "emptyDir": {}}],
            [{"name": DATA_VOLUME, "mountPath": DATA_MOUNT, "readOnly": True}], [init])


def _check_settings(*, namespace: str, cpu: str, memory: str, image: str, family: str,
                    integers: tuple[tuple[str, object, int], ...]) -> None:
    """The settings every fit job checks (JAXJob, TrainJob); DataError names the first bad
    one. ``integers`` are (name, value, lowest allowed)."""
    check(isinstance(namespace, str) and len(namespace) <= 63
           and bool(DNS1123.fullmatch(namespace)), f"namespace {namespace!r} is not a DNS-1123 "
                                                   f"label")
    for what, v, low in integers:
        check(isinstance(v, int) and not isinstance(v, bool) and v >= low,
               f"{what} must be an integer >= {low}, got {v!r}")
    for what, q in (("cpu", cpu), ("memory", memory)):
        check(isinstance(q, str) and bool(QUANTITY.fullmatch(q)),
               f"{what} {q!r} is not a Kubernetes quantity (e.g. 500m, 1, 512Mi, 1Gi)")
    check(isinstance(image, str) and bool(image) and " " not in image,
           f"image must be a non-empty image reference, got {image!r}")
    check(isinstance(family, str), f"family must be a name, got {family!r}")
    family_class(family)  # DataError naming the known families


def fit_args(data: str, family: str, **options) -> list[str]:
    """``fit DATA --family F ... --distributed`` for the worker pods, from ``mleops fit``'s
    options (``FIT_FLAGS``: ``column``, ``censor_column``, ``covariates``, ``threshold``,
    ``weights_column``, ``k``, ``method``, ``output``); None values are left out."""
    unknown = sorted(set(options) - set(FIT_FLAGS))
    check(not unknown, f"unknown fit options {unknown}; known: {sorted(FIT_FLAGS)}")
    args = ["fit", data, "--family", family]
    for name, value in options.items():
        if value is not None:
            args += [FIT_FLAGS[name],
                     ",".join(value) if isinstance(value, list | tuple) else str(value)]
    return args + ["--distributed"]


def render_jaxjob(
        name: str, *, data_uri: str, family: str, workers: int = 2, namespace: str = "models",
        image: str = IMAGE, cpu: str = "1", memory: str = "2Gi", gpus: int = 0,
        port: int = DEFAULT_PORT, env_secret_ref_name: str | None = None,
        backoff_limit: int = 0, ttl_seconds_after_finished: int = 86400,
        active_deadline_seconds: int | None = None,
        storage_initializer_image: str = STORAGE_INITIALIZER_IMAGE, **fit_options) -> dict:
    """The JAXJob fitting ``family`` to ``data_uri`` with ``workers`` processes.

    ``fit_options`` are ``mleops fit``'s (``column="latency"``, ``censor_column=...``,
    ``covariates=["age", "dose"]``, ``threshold=...``, ``k=...``, ``method=...``) plus
    ``output`` (a path in the pod for the JSON result). ``gpus`` per worker adds an
    ``nvidia.com/gpu`` limit (build the image with ``JAX_EXTRA=cuda12``). Raises DataError.
    """
    longest = 63 - len(f"-{WORKER.lower()}-{max(workers, 1) - 1}")  # pod <name>-worker-<i>
    check(isinstance(name, str) and 0 < len(name) <= longest
           and bool(DNS1035.fullmatch(name)), f"JAXJob name {name!r} must be a DNS-1035 label "
           f"of at most {longest} characters (its pods are <name>-worker-<i>)")
    _check_settings(namespace=namespace, cpu=cpu, memory=memory, image=image, family=family,
                    integers=(("workers", workers, 1), ("gpus", gpus, 0), ("port", port, 1),
                              ("backoff_limit", backoff_limit, 0),
                              ("ttl_seconds_after_finished", ttl_seconds_after_finished, 0)))
    check(port <= 65535, f"port must be at most 65535, got {port}")
    path, volumes, mounts, inits = _data_location(data_uri, storage_initializer_image,
                                                  env_secret_ref_name)
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    container = {
        "name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["mleops"],
        "args": fit_args(path, family, **fit_options),
        "ports": [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts}
    labels = {"app.kubernetes.io/managed-by": "mleops", "mleops.io/family": family.lower()}
    pod = {"metadata": {"labels": dict(labels)},
           "spec": {"containers": [container], "initContainers": inits, "volumes": volumes,
                    # the image's user (infra/docker/Dockerfile), numeric so the kubelet
                    # can verify runAsNonRoot
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                        "fsGroup": 1000}}}
    run_policy = {"backoffLimit": backoff_limit, "cleanPodPolicy": "None",
                  "ttlSecondsAfterFinished": ttl_seconds_after_finished}
    if active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = int(active_deadline_seconds)
    return {"apiVersion": f"{GROUP}/{API_VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"jaxReplicaSpecs": {WORKER: {"replicas": workers, "restartPolicy": "Never",
                                                  "template": pod}},
                     "runPolicy": run_policy}}


# --- validation ------------------------------------------------------------------------------
def default_crd_path() -> Path:
    """Where the JAXJob CRD is read from ($MLEOPS_JAXJOB_CRD overrides)."""
    return find_crd(CRD_ENV, CRD_FILE)


def _operator_rules(manifest: dict) -> None:
    """What the training operator's admission webhook checks (pkg/webhooks/jax)."""
    at = "manifest invalid at spec.jaxReplicaSpecs"
    specs = (manifest.get("spec") or {}).get("jaxReplicaSpecs")
    check(isinstance(specs, dict) and bool(specs), f"{at}: required (a {WORKER} entry)")
    for rtype, rs in specs.items():
        check(rtype == WORKER, f"{at}.{rtype}: unsupported replica type, only {WORKER!r}")
        policy = rs.get("restartPolicy", "Never")
        check(policy in RESTART_POLICIES,
               f"{at}.{rtype}.restartPolicy: {policy!r} is not one of {list(RESTART_POLICIES)}")
        containers = ((rs.get("template") or {}).get("spec") or {}).get("containers") or []
        where = f"{at}.{rtype}.template.spec.containers"
        check(bool(containers), f"{where}: must be specified")
        for i, c in enumerate(containers):
            check(bool(c.get("image")), f"{where}[{i}].image: required")
        check(any(c.get("name") == CONTAINER for c in containers),
               f"{where}: needs a container named {CONTAINER!r} (the one the operator "
               f"configures)")


def validate_jaxjob(manifest: dict, schema_path: str | os.PathLike | None = None, *,
                    strict: bool = True) -> dict:
    """Check ``manifest`` against the JAXJob CRD schema and the operator's rules; returns it.

    DataError names the first failing field as a path
    (``spec.jaxReplicaSpecs.Worker.replicas: 'two' is not of type 'integer'``).
    """
    validate_against_crd(manifest, schema_path, env=CRD_ENV, filename=CRD_FILE, group=GROUP,
                         version=API_VERSION, kind=KIND, name_pattern=DNS1035,
                         name_rule="DNS-1035", strict=strict)
    _operator_rules(manifest)
    return manifest


__all__ = ["API_VERSION", "FIT_FLAGS", "GROUP", "KIND", "PLURAL", "default_crd_path", "fit_args",
           "render_jaxjob", "validate_jaxjob"]
