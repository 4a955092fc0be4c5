"""Distributed fits on Kubernetes: Kubeflow ``JAXJob`` manifests and the program their pods run.

A fit too large for one machine runs as a JAXJob (``kubeflow.org/v1``, Kubeflow Training
Operator >= 1.9): ``workers`` pods, one JAX process each, joined by ``jax.distributed``; the
fit itself is the ordinary sharded fit (``mleops.fit(..., sharded=True)``), whose rows XLA
spreads over every device of every process. The operator tells each pod its rank through
``COORDINATOR_ADDRESS``/``COORDINATOR_PORT``/``NUM_PROCESSES``/``PROCESS_ID``; ``python -m
mleops.deploy.jaxjob fit DATA ...`` (same options as ``mleops fit``) reads them, initialises
``jax.distributed`` and fits; process 0 prints the result as JSON (and writes ``--output``).

Data: ``data_uri`` is copied into the pod by Seldon's rclone storage initializer when it is a
remote URI (``s3://``, ``gs://``, ``https://`` ...; credentials from ``env_secret_ref_name``),
mounted read-only for ``pvc://CLAIM/path``, or used as is for an absolute path already in the
image or a volume. Every process reads the whole table (the sharded fit places rows itself).
Manifests are validated against the real CRD (``infra/crds/jaxjob-crd.yaml``) and the
operator's admission rules.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import click

from .manifest import (
    _DNS1035,
    _DNS1123,
    _QUANTITY,
    STORAGE_INITIALIZER_IMAGE,
    _check,
    check_object,
    crd_schema,
    find_crd,
)

GROUP, API_VERSION, KIND, PLURAL = "kubeflow.org", "v1", "JAXJob", "jaxjobs"
WORKER, CONTAINER, PORT_NAME, DEFAULT_PORT = "Worker", "jax", "jaxjob-port", 6666
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
DATA_MOUNT, DATA_VOLUME = "/mnt/data", "data"
IMAGE = "ghcr.io/mleops/mleops:0.1.0"  # infra/docker/Dockerfile (BASE_IMAGE of the pipeline)
CRD_ENV, CRD_FILE = "MLEOPS_JAXJOB_CRD", "jaxjob-crd.yaml"


# --- the program each worker pod runs --------------------------------------------------------
def initialize_distributed(env: dict[str, str] | None = None) -> int:
    """Join the JAXJob's processes (a no-op outside one); returns this process' rank."""
    env = os.environ if env is None else env
    if "NUM_PROCESSES" not in env:
        return 0
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # GPUs use NCCL anyway
    jax.distributed.initialize(f"{env['COORDINATOR_ADDRESS']}:{env['COORDINATOR_PORT']}",
                               num_processes=int(env["NUM_PROCESSES"]),
                               process_id=int(env["PROCESS_ID"]))
    return jax.process_index()


def _fit_params() -> list[click.Parameter]:
    """``mleops fit``'s own arguments and options (one definition), minus ``--json``."""
    from ..cli.main import fit_cmd

    return [p for p in fit_cmd.params if p.name != "as_json"]


def _run_fit(data, family, column, censor_column, covariates, threshold, weights_column, k,
             method, output) -> None:
    from ..fit.api import fit
    from ..fit.request import ColumnSpec, select_columns
    from ..io import read_table

    rank = initialize_distributed()
    c = select_columns(read_table(data), ColumnSpec.from_params(
        column, censor_column, weights_column, covariates))
    res = fit(c.x, family, event=c.event, weights=c.weight, X=c.X,
              features=c.features or None, threshold=threshold, k=k, method=method,
              sharded=True)
    if rank == 0:  # every process holds the same result
        text = json.dumps(res.to_dict(), indent=2)
        click.echo(text)
        if output:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_text(text + "\n")


def _worker_cli() -> click.Group:
    from ..cli.main import _Group

    group = _Group("jaxjob", help="Programs run inside JAXJob pods.")
    group.add_command(click.Command(
        "fit", callback=_run_fit, help="Sharded fit across the JAXJob's processes.",
        params=_fit_params() + [click.Option(["--output"], help="Also write the JSON here.")]))
    return group


# --- manifests -------------------------------------------------------------------------------
def _data_location(data_uri: str, init_image: str, secret: str | None
                   ) -> tuple[str, list[dict], list[dict], list[dict]]:
    """(path inside the pod, volumes, volume mounts, init containers) for ``data_uri``."""
    _check(isinstance(data_uri, str) and bool(data_uri) and data_uri.strip() == data_uri
           and " " not in data_uri, f"data_uri must be a non-empty URI without spaces, "
                                    f"got {data_uri!r}")
    if data_uri.startswith("/"):
        return data_uri, [], [], []
    u = urlparse(data_uri)
    if u.scheme == "pvc":
        path = u.path.strip("/")
        _check(bool(_DNS1123.fullmatch(u.netloc or "")) and bool(path),
               f"data_uri {data_uri!r} must look like pvc://CLAIM/path/to/file")
        return (f"{DATA_MOUNT}/{path}",
                [{"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": u.netloc,
                                                                 "readOnly": True}}],
                [{"name": DATA_VOLUME, "mountPath": DATA_MOUNT, "readOnly": True}], [])
    name = os.path.basename(u.path.rstrip("/"))
    _check(bool(u.scheme) and bool(name), f"data_uri {data_uri!r} is neither an absolute "
           f"path, pvc://CLAIM/path nor a remote file URI (s3://bucket/key.parquet, ...)")
    init = {"name": "data-initializer", "image": init_image, "args": [data_uri, DATA_MOUNT],
            "resources": {"requests": {"cpu": "100m", "memory": "100Mi"},
                          "limits": {"cpu": "1", "memory": "1Gi"}},
            "volumeMounts": [{"name": DATA_VOLUME, "mountPath": DATA_MOUNT}]}
    if secret:
        init["envFrom"] = [{"secretRef": {"name": secret}}]
    return (f"{DATA_MOUNT}/{name}", [{"name": DATA_VOLUME, "emptyDir": {}}],
            [{"name": DATA_VOLUME, "mountPath": DATA_MOUNT, "readOnly": True}], [init])


def fit_args(data: str, family: str, **options) -> list[str]:
    """``fit DATA --family F ...`` for the worker program, from ``mleops fit``'s options
    (``column``, ``censor_column``, ``covariates``, ``threshold``, ``weights_column``, ``k``,
    ``method``, ``output``); None values are left out."""
    params = {p.name: p for p in _fit_params()}
    unknown = sorted(set(options) - set(params) - {"output"})
    _check(not unknown, f"unknown fit options {unknown}; known: {sorted(params)}")
    args = ["fit", data, "--family", family]
    for name, value in options.items():
        if value is not None:
            flag = params[name].opts[0] if name in params else "--output"
            args += [flag, ",".join(value) if isinstance(value, list | tuple) else str(value)]
    return args


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
    _check(isinstance(name, str) and 0 < len(name) <= longest
           and bool(_DNS1035.fullmatch(name)), f"JAXJob name {name!r} must be a DNS-1035 label "
           f"of at most {longest} characters (its pods are <name>-worker-<i>)")
    _check(isinstance(namespace, str) and len(namespace) <= 63
           and bool(_DNS1123.fullmatch(namespace)), f"namespace {namespace!r} is not a DNS-1123 "
                                                   f"label")
    for what, v, low in (("workers", workers, 1), ("gpus", gpus, 0), ("port", port, 1),
                         ("backoff_limit", backoff_limit, 0),
                         ("ttl_seconds_after_finished", ttl_seconds_after_finished, 0)):
        _check(isinstance(v, int) and not isinstance(v, bool) and v >= low,
               f"{what} must be an integer >= {low}, got {v!r}")
    _check(port <= 65535, f"port must be at most 65535, got {port}")
    for what, q in (("cpu", cpu), ("memory", memory)):
        _check(isinstance(q, str) and bool(_QUANTITY.fullmatch(q)),
               f"{what} {q!r} is not a Kubernetes quantity (e.g. 500m, 1, 512Mi, 1Gi)")
    _check(isinstance(image, str) and bool(image) and " " not in image,
           f"image must be a non-empty image reference, got {image!r}")
    from ..families import ALIASES, FAMILIES

    _check(isinstance(family, str) and ALIASES.get(family.lower(), family.lower()) in FAMILIES,
           f"unknown family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    path, volumes, mounts, inits = _data_location(data_uri, storage_initializer_image,
                                                  env_secret_ref_name)
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    container = {
        "name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "mleops.deploy.jaxjob"],
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
    _check(isinstance(specs, dict) and bool(specs), f"{at}: required (a {WORKER} entry)")
    for rtype, rs in specs.items():
        _check(rtype == WORKER, f"{at}.{rtype}: unsupported replica type, only {WORKER!r}")
        policy = rs.get("restartPolicy", "Never")
        _check(policy in RESTART_POLICIES,
               f"{at}.{rtype}.restartPolicy: {policy!r} is not one of {list(RESTART_POLICIES)}")
        containers = ((rs.get("template") or {}).get("spec") or {}).get("containers") or []
        where = f"{at}.{rtype}.template.spec.containers"
        _check(bool(containers), f"{where}: must be specified")
        for i, c in enumerate(containers):
            _check(bool(c.get("image")), f"{where}[{i}].image: required")
        _check(any(c.get("name") == CONTAINER for c in containers),
               f"{where}: needs a container named {CONTAINER!r} (the one the operator "
               f"configures)")


def validate_jaxjob(manifest: dict, schema_path: str | os.PathLike | None = None, *,
                    strict: bool = True) -> dict:
    """Check ``manifest`` against the JAXJob CRD schema and the operator's rules; returns it.

    DataError names the first failing field as a path
    (``spec.jaxReplicaSpecs.Worker.replicas: 'two' is not of type 'integer'``).
    """
    path = Path(schema_path) if schema_path is not None else default_crd_path()
    _check(path.is_file(), f"JAXJob CRD not found at {path} (set ${CRD_ENV})")
    check_object(manifest, f"{GROUP}/{API_VERSION}", KIND, _DNS1035, "DNS-1035",
                 crd_schema(path, version=API_VERSION, strict=strict))
    _operator_rules(manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    """``python -m mleops.deploy.jaxjob fit DATA --family F ...`` (the pods' command)."""
    from .._config import enable_compilation_cache

    enable_compilation_cache()
    _worker_cli().main(args=argv, prog_name="mleops.deploy.jaxjob")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])


__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "default_crd_path", "fit_args",
           "initialize_distributed", "render_jaxjob", "validate_jaxjob"]
