"""Compile, run locally (kfp local runner, no cluster) or submit to a KFP host, and summarise.

The summary always comes from MLflow (the run tagged with this invocation's ``run_tag``), so
local and cluster runs report the same way and CI reads one JSON shape.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from dataclasses import dataclass

from ..errors import DataError, MleopsError
from .dataset import ColumnSpec, load_source, split_indices
from .steps import family_options

EXIT_REGISTERED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REJECTED = 0, 1, 2, 3


class PipelineError(MleopsError, RuntimeError):
    """A pipeline task failed (the message names the task and where its logs are)."""


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
    threshold: float = 0.0
    components: int = 0
    seed: int = 0
    holdout_fraction: float = 0.2
    time_ordered: bool = False
    tracking_uri: str = ""
    gate_tolerance: float = 0.002
    gate_confidence: float = 0.95
    gate_test: str = "z"
    train_accelerator_type: str = ""
    deploy_namespace: str = "models"
    deploy_canary_traffic: int = 10
    deploy_apply: bool = False
    artifacts_destination: str = ""
    data_hash: str = ""  # filled by validate(): content hashes key the pipeline cache
    validation_data_hash: str = ""

    def validate(self) -> None:
        """Fail fast, before any task starts: the same checks ingest runs."""
        from ..gate import GateConfig

        if not self.model_name:
            raise DataError("a model name is required")
        spec = ColumnSpec.from_params(self.column, self.censor_column, self.weights_column,
                                      self.covariates, self.time_column)
        opts = family_options(self.family, self.threshold, self.components)
        t = load_source(self.data_uri, spec, self.family, **opts)
        self.data_hash = t.meta["data_hash"]
        if self.validation_data_uri:
            v = load_source(self.validation_data_uri, spec, self.family, **opts)
            self.validation_data_hash = v.meta["data_hash"]
        else:
            split_indices(t.n, seed=self.seed, holdout_fraction=self.holdout_fraction,
                          time_ordered=self.time_ordered, order=t.order)
        try:
            GateConfig(tolerance=self.gate_tolerance, confidence=self.gate_confidence,
                       test=self.gate_test)
        except ValueError as e:
            raise DataError(str(e)) from None

    def arguments(self, run_tag: str, tracking_uri: str) -> dict:
        args = {k: v for k, v in self.__dict__.items()}
        args["tracking_uri"] = tracking_uri
        args["run_tag"] = run_tag
        args["run_params_json"] = json.dumps({k: v for k, v in args.items()
                                              if k not in ("tracking_uri", "run_params_json")})
        return args


def resolve_tracking_uri(uri: str) -> str:
    """Explicit, absolute URI shared by every task process (they may not share a cwd)."""
    if uri:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlruns.db')}"


def compile_pipeline(path: str | None = None) -> str:
    from pipelines import training

    return training.compile_yaml(path or training.YAML)


def run_local(arguments: dict, *, pipeline_root: str, enable_caching: bool = True) -> None:
    """Execute the compiled components in this environment with the kfp local runner."""
    from kfp import local

    from pipelines.training import training_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root,
               enable_caching=enable_caching, raise_on_error=True)
    with warnings.catch_warnings():
        # Expected here: the component image runs as this environment; display names and
        # resource requests only matter on a cluster.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            training_pipeline(**arguments)
        except RuntimeError as e:
            raise PipelineError(f"pipeline task failed: {e} (outputs under {pipeline_root})") from e


def submit(host: str, arguments: dict, *, experiment: str, enable_caching: bool = True,
           client=None, yaml_path: str | None = None) -> str:
    """Submit the compiled pipeline to a KFP API server; returns the KFP run id."""
    import kfp

    from pipelines import training

    client = client or kfp.Client(host=host)
    run = client.create_run_from_pipeline_package(
        yaml_path or training.YAML, arguments=arguments,
        run_name=f"{arguments['model_name']}-{arguments['run_tag'][:8]}",
        experiment_name=experiment, enable_caching=enable_caching)
    return run.run_id


def summary(tracking_uri: str, model_name: str, run_tag: str) -> dict:
    """The MLflow run this invocation produced: gate decision and registered version."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(model_name)
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mleops.pipeline_run` = '{run_tag}'")
    if not runs:
        raise PipelineError(f"no MLflow run tagged mleops.pipeline_run={run_tag} in "
                            f"experiment {model_name!r} at {tracking_uri}")
    run = runs[0]
    path = client.download_artifacts(run.info.run_id, "gate/decision.json")
    with open(path) as f:
        decision = json.load(f)
    version = None
    for mv in client.search_model_versions(f"name = '{model_name}'"):
        if mv.run_id == run.info.run_id:
            version = mv.version
    return {"run_id": run.info.run_id, "run_tag": run_tag, "model_name": model_name,
            "tracking_uri": tracking_uri, "gate": decision,
            "registered_version": version,
            "metrics": dict(run.data.metrics)}


def run_pipeline(req: RunRequest, *, host: str = "", pipeline_root: str = "",
                 enable_caching: bool = True, client=None) -> dict:
    """Validate, run (locally unless ``host``), and summarise from MLflow."""
    req.validate()
    tracking = resolve_tracking_uri(req.tracking_uri)
    run_tag = uuid.uuid4().hex
    args = req.arguments(run_tag, tracking)
    if host:
        kfp_run = submit(host, args, experiment=req.model_name, enable_caching=enable_caching,
                         client=client)
        return {"submitted": True, "kfp_run_id": kfp_run, "run_tag": run_tag, "host": host}
    from ..registry import Registry

    # Fail fast (retries, then a RegistryError naming the URI) before any task runs.
    Registry(tracking).list_versions(req.model_name)
    root = pipeline_root or os.path.abspath(os.path.join(".mleops", "kfp-local"))
    run_local(args, pipeline_root=root, enable_caching=enable_caching)
    return summary(tracking, req.model_name, run_tag)


def exit_code(result: dict) -> int:
    if result.get("submitted"):
        return EXIT_REGISTERED
    return EXIT_REGISTERED if result.get("registered_version") else EXIT_REJECTED
