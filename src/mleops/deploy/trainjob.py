"""Distributed fits on Kubeflow Trainer v2: ``TrainJob`` manifests, their runtime, and a
submit-and-wait loop.

A ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) names a ``ClusterTrainingRuntime`` and says
what differs for this job; the Trainer renders a JobSet whose ``node`` replicated job runs
``numNodes`` pods, one JAX process each. The runtime's JAX ML policy (``mlPolicy.jax``,
kubeflow/trainer ``pkg/runtime/framework/plugins/jax/jax.go``) gives each ``node`` container
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` (the Job completion index) and
``JAX_COORDINATOR_ADDRESS`` (``<job>-node-0-0.<job>:29500``), which
:func:`mleops.fit.sharded.initialize_distributed` reads; the pods run the same
``mleops fit DATA ... --distributed`` as a JAXJob's (:func:`mleops.deploy.jaxjob.fit_args`).

The TrainJob carries everything mleops needs (``spec.trainer``: image, command, args,
numNodes, resourcesPerNode, env; ``spec.runtimePatches``: volumes, mounts, security context,
pod labels, service account), so it runs on the stock ``jax-distributed`` runtime as well as
on the one mleops ships (``infra/k8s/jobs/mleops-jax-runtime.yaml``: no per-pod retries,
which a ``jax.distributed`` group cannot survive). Data: an absolute path or ``pvc://`` as
for a JAXJob; a runtime patch cannot add an init container, so a remote URI (``s3://`` ...)
is read by the pods themselves (``mleops.storage``), with ``AWS_*`` keys from
``env_secret_ref_name`` or the service account's workload identity.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path

from mleops._version import IMAGE
from mleops.deploy.apply import _request, custom_objects_api
from mleops.deploy.jaxjob import _check_settings, _data_location, fit_args
from mleops.deploy.k8s import (
    DNS1035,
    DNS1123,
    SUBDOMAIN,
    DeployError,
    Resource,
    check,
    find_crd,
    validate_against_crd,
)

GROUP, API_VERSION, KIND, PLURAL = "trainer.kubeflow.org", "v1alpha1", "TrainJob", "trainjobs"
TRAINJOB = Resource(GROUP, API_VERSION, PLURAL, KIND)
RUNTIME_KIND = "ClusterTrainingRuntime"
#: the replicated job and container the Trainer configures (constants.Node)
NODE = "node"
ANCESTOR_LABEL, TRAINER_ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step", "trainer"
MLEOPS_RUNTIME, STOCK_RUNTIME = "mleops-jax", "jax-distributed"
PATCH_MANAGER = "mleops.io/render-trainjob"  # a runtimePatches owner: a domain-prefixed path
#: the variables the JAX ML policy sets; a TrainJob must leave them to it
JAX_ENV = ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_COORDINATOR_ADDRESS")
#: object-store keys read from ``env_secret_ref_name`` (name, optional)
S3_KEYS = (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False),
           ("AWS_SESSION_TOKEN", True), ("AWS_ENDPOINT_URL", True),
           ("AWS_DEFAULT_REGION", True))
CRD_ENV, CRD_FILE = "MLEOPS_TRAINJOB_CRD", "trainer-trainjob-crd.yaml"
RUNTIME_CRD_ENV = "MLEOPS_TRAINING_RUNTIME_CRD"
RUNTIME_CRD_FILE = "trainer-clustertrainingruntime-crd.yaml"
#: the image's user (infra/docker/Dockerfile), numeric so the kubelet can check runAsNonRoot
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
FINISHED = ("Complete", "Failed")  # TrainJob condition types (trainjob_types.go)


# --- manifests -------------------------------------------------------------------------------
def _data(data_uri: str, secret: str | None) -> tuple[str, list[dict], list[dict], list[dict]]:
    """(path or URI the pods read, volumes, node mounts, node env) for ``data_uri``; the
    secret's ``AWS_*`` keys reach the pods only when they read an object store."""
    check(secret is None or isinstance(secret, str) and len(secret) <= 253
           and bool(SUBDOMAIN.fullmatch(secret)),
           f"env_secret_ref_name {secret!r} is not a secret name (DNS-1123 subdomain)")
    path, volumes, mounts, inits = _data_location(data_uri, "", None)  # as a JAXJob's
    if not inits:
        return path, volumes, mounts, []
    # a remote file: a runtime patch cannot add the init container that copies it
    return data_uri, [], [], [{"name": key, "valueFrom": {"secretKeyRef": {
        "name": secret, "key": key, "optional": optional}}} for key, optional in S3_KEYS
        if secret]


def render_trainjob(
        name: str, *, data_uri: str, family: str, num_nodes: int = 2,
        runtime: str = MLEOPS_RUNTIME, namespace: str = "models", image: str = IMAGE,
        cpu: str = "1", memory: str = "2Gi", gpus: int = 0,
        env_secret_ref_name: str | None = None, service_account: str | None = None,
        active_deadline_seconds: int | None = None, **fit_options) -> dict:
    """The TrainJob fitting ``family`` to ``data_uri`` on ``num_nodes`` JAX processes.

    ``runtime`` is a ClusterTrainingRuntime with the JAX ML policy (``mleops-jax`` or the
    stock ``jax-distributed``); ``fit_options`` are those of :func:`jaxjob.fit_args`
    (``column``, ``censor_column``, ``covariates``, ..., ``output``). Raises DataError.
    """
    longest = 63 - len(f"-{NODE}-0-{max(num_nodes, 1) - 1}") if isinstance(num_nodes, int) \
        else 63  # pod host names are <name>-node-0-<i>
    check(isinstance(name, str) and 0 < len(name) <= longest
           and bool(DNS1035.fullmatch(name)), f"TrainJob name {name!r} must be a DNS-1035 "
           f"label of at most {longest} characters (its pods are <name>-{NODE}-0-<i>)")
    check(isinstance(runtime, str) and 0 < len(runtime) <= 253
           and bool(SUBDOMAIN.fullmatch(runtime)),
           f"runtime {runtime!r} is not a ClusterTrainingRuntime name")
    check(service_account is None or isinstance(service_account, str)
           and bool(SUBDOMAIN.fullmatch(service_account)),
           f"service_account {service_account!r} is not a service account name")
    check(active_deadline_seconds is None or isinstance(active_deadline_seconds, int)
           and not isinstance(active_deadline_seconds, bool) and active_deadline_seconds >= 1,
           f"active_deadline_seconds must be an integer >= 1, got {active_deadline_seconds!r}")
    _check_settings(namespace=namespace, cpu=cpu, memory=memory, image=image, family=family,
                    integers=(("num_nodes", num_nodes, 1), ("gpus", gpus, 0)))
    path, volumes, mounts, env = _data(data_uri, env_secret_ref_name)
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    labels = {"app.kubernetes.io/managed-by": "mleops", "mleops.io/family": family.lower()}
    trainer = {"image": image, "command": ["mleops"],
               "args": fit_args(path, family, **fit_options), "numNodes": num_nodes,
               "resourcesPerNode": {"requests": {"cpu": cpu, "memory": memory},
                                    "limits": limits}}
    if env:
        trainer["env"] = env
    node = {"name": NODE, "securityContext": copy.deepcopy(CONTAINER_SECURITY),
            **({"volumeMounts": mounts} if mounts else {})}
    pod_spec = {"securityContext": dict(POD_SECURITY), "containers": [node],
                **({"volumes": volumes} if volumes else {}),
                **({"serviceAccountName": service_account} if service_account else {})}
    patch = {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
        "replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {
            "metadata": {"labels": dict(labels)}, "spec": pod_spec}}}}]}}}}
    spec = {"runtimeRef": {"name": runtime, "apiGroup": GROUP, "kind": RUNTIME_KIND},
            "trainer": trainer, "runtimePatches": [patch]}
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {"apiVersion": TRAINJOB.api_version, "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": spec}


# --- validation ------------------------------------------------------------------------------
def default_crd_path() -> Path:
    """Where the TrainJob CRD is read from ($MLEOPS_TRAINJOB_CRD overrides)."""
    return find_crd(CRD_ENV, CRD_FILE)


def _trainer_rules(manifest: dict) -> None:
    """What the Trainer's webhook checks of the patches (plugins/jobset/jobset.go Validate)
    against a JAX runtime with one ``node`` job and container, and that the JAX policy's
    variables are left to it."""
    spec = manifest.get("spec") or {}
    env = (spec.get("trainer") or {}).get("env") or []
    clash = sorted({e.get("name") for e in env} & set(JAX_ENV))
    check(not clash, f"manifest invalid at spec.trainer.env: {clash} are set by the JAX runtime")
    for i, p in enumerate(spec.get("runtimePatches") or []):
        at = f"manifest invalid at spec.runtimePatches[{i}]"
        manager = p.get("manager", "")
        prefix, _, rest = manager.partition("/")
        check(bool(rest) and bool(SUBDOMAIN.fullmatch(prefix)) and "." in prefix,
               f"{at}.manager: {manager!r} is not a domain-prefixed path (example.com/name)")
        jobs = (((p.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec")
                or {}).get("replicatedJobs") or []
        for j, job in enumerate(jobs):
            where = f"{at}...replicatedJobs[{j}]"
            check(job.get("name") == NODE, f"{where}.name: {job.get('name')!r} is not a job "
                                            f"of the JAX runtime (only {NODE!r})")
            pod = ((((job.get("template") or {}).get("spec") or {}).get("template") or {})
                   .get("spec") or {})
            check(not pod.get("initContainers"), f"{where}: the runtime has no init "
                                                  f"containers to patch")
            for c in pod.get("containers") or []:
                check(c.get("name") == NODE, f"{where}: container {c.get('name')!r} does not "
                                              f"exist in the runtime job {NODE!r}")
                check(not c.get("env"), f"{where}: env of the {NODE!r} container goes in "
                                        f"spec.trainer.env")


def validate_trainjob(manifest: dict, schema_path: str | os.PathLike | None = None, *,
                      strict: bool = True) -> dict:
    """Check ``manifest`` against the TrainJob CRD schema and the Trainer's webhook rules;
    returns it. DataError names the first failing field as a path."""
    validate_against_crd(manifest, schema_path, env=CRD_ENV, filename=CRD_FILE, group=GROUP,
                         version=API_VERSION, kind=KIND, name_pattern=DNS1035,
                         name_rule="DNS-1035", strict=strict)
    _trainer_rules(manifest)
    return manifest


def validate_runtime(manifest: dict, schema_path: str | os.PathLike | None = None, *,
                     strict: bool = True) -> dict:
    """Check a ClusterTrainingRuntime against its CRD, and that it is one mleops' TrainJobs
    can run on: the JAX ML policy and a trainer-step job ``node`` with a ``node`` container."""
    validate_against_crd(manifest, schema_path, env=RUNTIME_CRD_ENV, filename=RUNTIME_CRD_FILE,
                         group=GROUP, version=API_VERSION, kind=RUNTIME_KIND,
                         name_pattern=DNS1123, name_rule="DNS-1123", strict=strict)
    spec = manifest.get("spec") or {}
    check("jax" in (spec.get("mlPolicy") or {}),
           "manifest invalid at spec.mlPolicy.jax: required (it sets the JAX_* variables)")
    jobs = ((spec.get("template") or {}).get("spec") or {}).get("replicatedJobs") or []
    node = next((j for j in jobs if j.get("name") == NODE), None)
    check(node is not None and ((node.get("template") or {}).get("metadata") or {})
           .get("labels", {}).get(ANCESTOR_LABEL) == TRAINER_ANCESTOR,
           f"manifest invalid at spec.template.spec.replicatedJobs: needs a job {NODE!r} "
           f"labelled {ANCESTOR_LABEL}: {TRAINER_ANCESTOR}")
    pod = (((node["template"].get("spec") or {}).get("template") or {}).get("spec") or {})
    check(any(c.get("name") == NODE for c in pod.get("containers") or []),
           f"manifest invalid at spec.template.spec.replicatedJobs[{NODE}]: needs a container "
           f"named {NODE!r} (the one the Trainer configures)")
    return manifest


# --- submitting ------------------------------------------------------------------------------
def _finished(obj: dict | None) -> dict | None:
    """The first true Complete/Failed condition of a TrainJob, or None while it runs."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") in FINISHED and c.get("status") == "True":
            return c
    return None


def _where(manifest: dict, namespace: str | None) -> tuple[str, str]:
    check(isinstance(manifest, dict) and manifest.get("kind") == KIND,
           f"not a {TRAINJOB.api_version} {KIND} manifest")
    name = (manifest.get("metadata") or {}).get("name")
    namespace = namespace or (manifest.get("metadata") or {}).get("namespace")
    check(bool(name) and bool(namespace), "the TrainJob needs metadata.name and a namespace")
    return name, namespace


def create_trainjob(manifest: dict, *, api=None, namespace: str | None = None,
                    request_timeout_s: float = 30.0) -> dict:
    """Create the TrainJob (its spec is immutable: an existing one is an error, HTTP 409);
    the object the server keeps. DeployError names it and the server's reason."""
    name, namespace = _where(manifest, namespace)
    body = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
    return _request(f"creating {KIND} {namespace}/{name}",
                    (api or custom_objects_api()).create_namespaced_custom_object, body=body,
                    _request_timeout=request_timeout_s, **TRAINJOB.ref(namespace))


def submit_and_wait(manifest: dict, *, api=None, namespace: str | None = None,
                    timeout_s: float = 3600.0, poll_s: float = 10.0,
                    request_timeout_s: float = 30.0,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> dict:
    """Create the TrainJob and poll it until a Complete or Failed condition; its final
    ``status``. DeployError when it fails (naming the condition's reason and message), does not
    finish within ``timeout_s``, or the API refuses; every API call times out after
    ``request_timeout_s``."""
    name, namespace = _where(manifest, namespace)
    for what, v in (("timeout_s", timeout_s), ("poll_s", poll_s),
                    ("request_timeout_s", request_timeout_s)):
        check(isinstance(v, int | float) and v >= 0, f"{what} must be >= 0, got {v!r}")
    api = api or custom_objects_api()
    where = f"{KIND} {namespace}/{name}"
    create_trainjob(manifest, api=api, namespace=namespace, request_timeout_s=request_timeout_s)
    deadline, obj = clock() + timeout_s, None
    while True:
        try:
            obj = _request(f"reading {where}", api.get_namespaced_custom_object, name=name,
                           _request_timeout=request_timeout_s, **TRAINJOB.ref(namespace))
        except DeployError as e:  # just created: the server's cache may not have it yet
            if getattr(e.__cause__, "status", None) != 404:
                raise
            obj = None
        if (done := _finished(obj)) is not None:
            if done["type"] == "Failed":
                raise DeployError(f"{where} failed ({done.get('reason', '?')}): "
                                  f"{done.get('message', '')}")
            return obj.get("status") or {}
        if clock() >= deadline:
            conditions = [f"{c.get('type')}={c.get('status')}" for c in
                          ((obj or {}).get("status") or {}).get("conditions") or []]
            raise DeployError(f"{where} did not finish within {timeout_s:g} s (conditions: "
                              f"{', '.join(conditions) or 'none yet'})")
        sleep(min(poll_s, max(deadline - clock(), 0.0)))


__all__ = ["API_VERSION", "GROUP", "KIND", "MLEOPS_RUNTIME", "PLURAL", "STOCK_RUNTIME",
           "TRAINJOB", "create_trainjob", "default_crd_path", "render_trainjob", "submit_and_wait",
           "validate_runtime", "validate_trainjob"]
