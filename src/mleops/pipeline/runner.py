"""A pipeline run: validate the request, hand it to a driver (run locally or submit), summarise.

The driver (compile, kfp local runner, submit to a KFP host) lives with the pipeline
definition in ``pipelines/`` and is found through the ``mleops.pipelines`` entry point, so the
library never imports the shells. The summary always comes from MLflow (the run tagged with
this invocation's ``run_tag``), so local and cluster runs report the same way and CI reads one
JSON shape.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from typing import Protocol

from mleops.errors import DataError, MleopsError
from mleops.gate import DEFAULT_TOLERANCE, INCONCLUSIVE_POLICIES
from mleops.pipeline import failure, provenance
from mleops.pipeline.dataset import ColumnSpec, check_validation, load_source, split_indices
from mleops.pipeline.regate import REGATED_TAG
from mleops.pipeline.steps import family_options
from mleops.pipeline.trainjob import TrainJobSettings, needs_trainjob
from mleops.registry import DUPLICATE_TAG
from mleops.storage import is_remote

POLL_ENV = "MLEOPS_KFP_POLL_S"  # seconds between polls of a KFP run
REQUEST_TIMEOUT_ENV = "MLEOPS_KFP_REQUEST_TIMEOUT_S"  # socket timeout of each KFP API call
DRIVERS = "mleops.pipelines"  # entry-point group the pipeline shells register under


class PipelineError(MleopsError, RuntimeError):
    """A pipeline task failed (the message names the task and where its logs are).

    ``cause`` is the type name of the task's own error when it is known (``"DataError"``:
    the task refused its input), so the exit code can follow the cause."""

    def __init__(self, message: str, *, task: str = "", cause: str = ""):
        super().__init__(message)
        self.task, self.cause = task, cause


@dataclass
class RunRequest:
    data_uri: str
    family: str
    model_name: str
    validation_data_uri: str = ""
    column: str = ""
    censor_column: str = ""
    weights_column: str = ""
    covariates: str = ""
    time_column: str = ""
    key_column: str = ""  # comma-separated: a fleet, one model per key (fleet_steps)
    fleet_fdr: float = 0.05  # a fleet's gate: false discovery rate of "worse" keys
    threshold: float = 0.0
    components: int = 0
    seed: int = 0
    holdout_fraction: float = 0.2
    time_ordered: bool = False
    tracking_uri: str = ""
    gate_tolerance: float = DEFAULT_TOLERANCE
    gate_confidence: float = 0.95
    gate_test: str = "z"
    gate_on_inconclusive: str = INCONCLUSIVE_POLICIES[0]
    train_accelerator_type: str = ""
    train_max_memory: int = 0  # stream the train table in batches of this many bytes; 0: auto
    deploy_namespace: str = "models"
    deploy_canary_traffic: int = 10
    deploy_apply: bool = False
    deploy_target: str = "seldon"  # or "kserve": an InferenceService
    deploy_mode: str = "Serverless"  # KServe's deployment mode
    trainjob_min_bytes: int = 0  # data larger than this is fitted by a TrainJob; 0: never
    trainjob_result_uri: str = ""  # object-store prefix the TrainJob writes its result under
    trainjob_nodes: int = 2
    trainjob_namespace: str = "models"
    trainjob_env_secret: str = ""
    trainjob_timeout_s: float = 3600.0
    artifacts_destination: str = ""
    git_commit: str = ""  # read by the CLI where the checkout is: pods have no git
    data_hash: str = ""  # filled by validate(): content hashes key the pipeline cache
    validation_data_hash: str = ""
    code_version: str = ""  # filled by validate(): the code is part of every cache key
    candidate_key: str = ""  # filled by validate(): equal keys, same candidate (no duplicate)

    def validate(self) -> None:
        """Fail fast, before any task starts: the same checks ingest runs."""
        from mleops.gate import GateConfig

        if not self.model_name:
            raise DataError("a model name is required")
        spec = ColumnSpec.from_params(self.column, self.censor_column, self.weights_column,
                                      self.covariates, self.time_column, self.key_column)
        opts = family_options(self.family, self.threshold, self.components)
        if spec.key_columns:
            self.check_fleet(spec)
        t = load_source(self.data_uri, spec, self.family, what="training data", **opts)
        self.data_hash = t.meta["data_hash"]
        if self.validation_data_uri:
            # Validation rows use the training data's resolved response column, as split does.
            vspec = ColumnSpec(**{**t.meta["spec"], "column": t.meta["response"]})
            v = check_validation(load_source(self.validation_data_uri, vspec, self.family,
                                             what="validation data", **opts),
                                 self.validation_data_uri)
            self.validation_data_hash = v.meta["data_hash"]
        else:
            split_indices(t.n, seed=self.seed, holdout_fraction=self.holdout_fraction,
                          time_ordered=self.time_ordered, order=t.order)
        try:
            GateConfig(tolerance=self.gate_tolerance, confidence=self.gate_confidence,
                       test=self.gate_test, on_inconclusive=self.gate_on_inconclusive)
        except ValueError as e:
            raise DataError(str(e)) from None
        check_deploy_settings(self.model_name, self.deploy_namespace,
                              self.deploy_canary_traffic, self.deploy_target, self.deploy_mode)
        self.check_trainjob(t.meta)
        self.check_train_memory(spec)
        self.code_version = provenance.code_version()
        self.candidate_key = provenance.candidate_key(
            data=self.data_hash, validation=self.validation_data_hash, family=self.family,
            options=opts, spec=asdict(spec), seed=self.seed,
            holdout=None if self.validation_data_uri else [self.holdout_fraction,
                                                          self.time_ordered])

    def check_fleet(self, spec: ColumnSpec) -> None:
        """What a fleet run (``key_column``) cannot do yet fails now, not in a task."""
        from mleops.gate import FleetGateConfig

        refused = {"--covariates": spec.covariates, "--trainjob-min-bytes":
                   self.trainjob_min_bytes, "--train-max-memory": self.train_max_memory,
                   "--gate-test bootstrap": self.gate_test == "bootstrap"}
        if used := [k for k, v in refused.items() if v]:
            raise DataError(f"{', '.join(used)} cannot be combined with --key-column (a "
                            "fleet) yet")
        try:
            FleetGateConfig(fdr=self.fleet_fdr)
        except ValueError as e:
            raise DataError(str(e).replace("FleetGateConfig.fdr", "--fdr")) from None

    def trainjob(self) -> TrainJobSettings:
        """The train step's TrainJob settings (what the train component builds)."""
        return TrainJobSettings(min_bytes=self.trainjob_min_bytes,
                                result_uri=self.trainjob_result_uri, nodes=self.trainjob_nodes,
                                namespace=self.trainjob_namespace,
                                env_secret=self.trainjob_env_secret,
                                timeout_s=self.trainjob_timeout_s)

    def check_trainjob(self, meta: dict) -> None:
        """Where the data calls for a TrainJob, render it now (a placeholder name): bad
        settings fail here, not after ingest and split."""
        from mleops.pipeline.trainjob import check_plan, render_fit_job

        if needs_trainjob(self.data_uri, self.trainjob_min_bytes):
            job = self.trainjob()
            check_plan(job, holdout_split=not self.validation_data_uri)
            render_fit_job(meta, job, name="fit-check", family=self.family, method="auto",
                           options=family_options(self.family, self.threshold,
                                                  self.components))

    def check_train_memory(self, spec: ColumnSpec) -> None:
        """A streaming budget too small for the table's columns fails now, not in train."""
        from mleops.pipeline.streamed import check_budget

        roles = (spec.censor_column, spec.weights_column, spec.time_column)
        check_budget(self.train_max_memory, 1 + sum(map(bool, roles)) + len(spec.covariates))

    def check_portable(self, pipeline_root: str = "") -> None:
        """Refuse what only works on this machine before a cluster's pods are sent it."""
        for flag, uri in (("--data", self.data_uri),
                          ("--validation-data", self.validation_data_uri)):
            if uri and not is_remote(uri):
                raise DataError(f"{flag} {uri}: a local path cannot be read by the cluster's "
                                f"pods; give an object-store URI (s3://, gs://, ...)")
        if not self.tracking_uri.startswith(("http://", "https://", "databricks")):
            raise DataError(f"--tracking-uri {self.tracking_uri or '(default: local sqlite)'}: "
                            f"the cluster's pods need an MLflow server URL (http(s)://...)")
        for flag, uri in (("--artifacts-destination", self.artifacts_destination),
                          ("--pipeline-root", pipeline_root),
                          ("--trainjob-result-uri", self.trainjob_result_uri)):
            if uri and not is_remote(uri):
                raise DataError(f"{flag} {uri}: not a URI the cluster can reach "
                                f"(s3://, gs://, ...)")

    def arguments(self, run_tag: str, tracking_uri: str) -> dict:
        args = {k: v for k, v in self.__dict__.items()}
        args["tracking_uri"] = tracking_uri
        args["run_tag"] = run_tag
        args["run_params_json"] = json.dumps({k: v for k, v in args.items()
                                              if k not in ("tracking_uri", "run_params_json")})
        return args


def check_deploy_settings(model_name: str, namespace: str, canary_traffic: int,
                          target: str = "seldon", mode: str = "Serverless") -> None:
    """The deploy step's settings must render: refused up front, not four tasks in."""
    from mleops.deploy import TARGETS, deployment_name
    from mleops.deploy.k8s import DNS1035, DNS1123
    from mleops.deploy.kserve import MODES, NAME_MAX, canary_field

    if target not in TARGETS:
        raise DataError(f"--deploy-target {target!r}: one of {sorted(TARGETS)}")
    name = deployment_name(model_name)
    kind, longest, rule = (("InferenceService", NAME_MAX, DNS1035) if target == "kserve"
                           else ("SeldonDeployment", 63, DNS1123))
    if len(name) > longest or not rule.fullmatch(name):
        raise DataError(f"--model-name {model_name!r}: its {kind} name {name!r} is not a valid "
                        f"Kubernetes name (lower-case letters, digits and '-', starting "
                        f"{'with a letter' if rule is DNS1035 else 'alphanumeric'} and ending "
                        f"alphanumeric, at most {longest})")
    if len(namespace) > 63 or not DNS1123.fullmatch(namespace):
        raise DataError(f"--deploy-namespace {namespace!r} is not a valid Kubernetes namespace")
    if not 0 <= canary_traffic <= 100:
        raise DataError(f"--deploy-canary-traffic {canary_traffic}: a percentage, 0 to 100")
    if target == "kserve":
        if mode not in MODES:
            raise DataError(f"--deploy-mode {mode!r}: one of {list(MODES)}")
        try:  # every version after the first is deployed as a canary
            canary_field(mode)
        except MleopsError:
            raise DataError(f"--deploy-mode {mode}: KServe splits no canary traffic in this "
                            f"mode (kserve#5335); use Serverless, Knative or Standard "
                            f"(KServe >= 0.20)") from None


@dataclass
class Host:
    """A KFP API server to run on, and as whom: what ``--host`` & co. say."""

    url: str
    namespace: str = ""
    experiment: str = ""
    token: str = ""
    wait: bool = True
    timeout_s: float = 3600.0
    poll_s: float = field(default_factory=lambda: float(os.environ.get(POLL_ENV, "5")))
    request_timeout_s: float = field(
        default_factory=lambda: float(os.environ.get(REQUEST_TIMEOUT_ENV, "30")))


class PipelineDriver(Protocol):
    """What drives a pipeline with the KFP SDK (implemented in ``pipelines/``)."""

    yaml_path: str

    def compile(self, path: str | None = None) -> str: ...

    def run_local(self, arguments: dict, *, pipeline_root: str,
                  enable_caching: bool = True) -> None: ...

    def submit(self, host: Host, arguments: dict, *, enable_caching: bool | None = None,
               pipeline_root: str = "", client=None) -> str: ...

    def wait(self, host: Host, run_id: str, *, client=None) -> tuple[str, str, str]:
        """(state, the host's error message, the task the host says failed or "")."""


def load_driver(name: str = "training") -> PipelineDriver:
    """The driver registered as ``name`` in the ``mleops.pipelines`` entry-point group."""
    found = [e for e in entry_points(group=DRIVERS) if e.name == name]
    if not found:
        raise PipelineError(f"no pipeline {name!r} registered under entry points {DRIVERS!r} "
                            f"(is mleops installed with its pipelines? pip install -e .)")
    return found[0].load()


def compile_pipeline(path: str | None = None, *, driver: PipelineDriver | None = None) -> str:
    """Compile the training pipeline to KFP IR YAML; the path written."""
    return (driver or load_driver()).compile(path)


def summary(registry, model_name: str, run_tag: str) -> dict:
    """The MLflow run this invocation produced: gate decision and registered version."""
    run_id = registry.find_run(model_name, failure.RUN_TAG, run_tag)
    if run_id is None:
        raise PipelineError(f"no MLflow run tagged mleops.pipeline_run={run_tag} in "
                            f"experiment {model_name!r} at {registry.uri}")
    tags = registry.run_tags(run_id)
    # the gate's decision, then each re-gate's (regate.py): the last one is what counted
    decisions = [registry.run_json(run_id, "gate/decision.json")] + [
        registry.run_json(run_id, f"gate/regate-{i}.json")
        for i in range(1, int(tags.get(REGATED_TAG, "0") or 0) + 1)]
    return {"run_id": run_id, "run_tag": run_tag, "model_name": model_name,
            "tracking_uri": registry.uri, "gate": decisions[-1], "gate_decisions": decisions,
            "registered_version": registry.version_of_run(model_name, run_id),
            "duplicate_of": tags.get(DUPLICATE_TAG) or None,
            "metrics": registry.run_metrics(run_id)}


def host_failure(ended: str, error: str, task: str, rec: dict | None) -> PipelineError:
    """The error of a host run that did not succeed, the cause on its last line: the failed
    task's own record (left on the MLflow run, :mod:`~mleops.pipeline.failure`) when it left
    one, else the task the KFP API names and what the API says of it."""
    if rec is not None:
        return PipelineError(f"{ended}" + (f": {error}" if error else "")
                             + f"\ntask '{rec['task']}' failed: {rec['type']}: "
                             f"{rec['message']}", task=rec["task"], cause=rec["type"])
    if task:
        return PipelineError(f"{ended}\ntask '{task}' failed: "
                             f"{error or 'the host gave no message'} (its pod log has more)",
                             task=task)
    return PipelineError(ended + (f": {error}" if error else ""))


def run_pipeline(req: RunRequest, *, host: Host | None = None, pipeline_root: str = "",
                 enable_caching: bool | None = None, client=None,
                 driver: PipelineDriver | None = None) -> dict:
    """Validate, run (locally, or on ``host`` and wait for it), and summarise from MLflow.

    ``enable_caching`` None keeps the pipeline's own per-task choices (kfp's client would
    otherwise force one value on every top-level task, ``evaluate`` included); False turns
    caching off everywhere.
    """
    from mleops.registry import Registry, default_tracking_uri

    req.validate()
    req.tracking_uri = tracking = req.tracking_uri or default_tracking_uri()
    if host:
        req.check_portable(pipeline_root)
    driver = driver or load_driver()
    registry = Registry(tracking)
    # Fail fast (retries, then a RegistryError naming the URI) before any task runs.
    registry.list_versions(req.model_name)
    if dup := registry.duplicate_of(req.model_name, req.candidate_key):
        return {"duplicate_of": dup, "registered_version": None, "model_name": req.model_name,
                "tracking_uri": registry.uri, "candidate_key": req.candidate_key}
    run_tag = uuid.uuid4().hex
    args = req.arguments(run_tag, tracking)
    if host:
        kfp_run = driver.submit(host, args, enable_caching=enable_caching,
                                pipeline_root=pipeline_root, client=client)
        if not host.wait:
            return {"submitted": True, "kfp_run_id": kfp_run, "run_tag": run_tag,
                    "host": host.url}
        state, error, task = driver.wait(host, kfp_run, client=client)
        if state != "SUCCEEDED":
            raise host_failure(f"KFP run {kfp_run} on {host.url} ended {state}", error, task,
                               failure.from_registry(registry, req.model_name, run_tag)
                               if state == "FAILED" else None)
        return {**summary(registry, req.model_name, run_tag), "kfp_run_id": kfp_run}
    root = pipeline_root or os.path.abspath(os.path.join(".mleops", "kfp-local"))
    driver.run_local(args, pipeline_root=root, enable_caching=enable_caching is not False)
    return summary(registry, req.model_name, run_tag)
