"""KFP components of the training pipeline: typed artifacts in, typed artifacts out.

``code_version`` (``mleops.pipeline.provenance``) is an input of every cached component so
that their cache keys change with the library code they call, not only with these bodies.

Bodies only translate artifacts to paths and call ``mleops.pipeline.steps``; the component
image (``infra/docker/Dockerfile``) has mleops installed, so nothing is pip-installed at run
time. Imports live inside the bodies because KFP ships each body as a standalone function.
"""


from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from mleops.pipeline import BASE_IMAGE

component = dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)


@component
def ingest(data_uri: str, data_hash: str, code_version: str, family: str, column: str,
           censor_column: str, weights_column: str, covariates: str, time_column: str,
           key_column: str, threshold: float, components: int,
           dataset: Output[Dataset]) -> NamedTuple("IngestOut", data_hash=str, n_rows=int):
    from mleops.pipeline import steps
    from mleops.pipeline.dataset import ColumnSpec

    spec = ColumnSpec.from_params(column, censor_column, weights_column, covariates, time_column,
                                  key_column)
    meta = steps.ingest(data_uri, dataset.path, family=family, spec=spec, expect_hash=data_hash,
                        threshold=threshold, k=components)
    dataset.metadata.update({"data_hash": meta["data_hash"], "n_rows": meta["n_rows"]})
    return (meta["data_hash"], meta["n_rows"])


@component
def split(dataset: Input[Dataset], validation_data_uri: str, validation_data_hash: str,
          code_version: str, family: str, threshold: float,
          components: int, seed: int, holdout_fraction: float, time_ordered: bool,
          train: Output[Dataset], heldout: Output[Dataset]):
    from mleops.pipeline import steps

    info = steps.split(dataset.path, train.path, heldout.path, seed=seed,
                       holdout_fraction=holdout_fraction, time_ordered=time_ordered,
                       validation_uri=validation_data_uri,
                       validation_hash=validation_data_hash, family=family,
                       threshold=threshold, k=components)
    train.metadata["n_rows"] = info["n_train"]
    heldout.metadata.update({"n_rows": info["n_heldout"], "source": info["heldout_source"]})


@component
def train(train_data: Input[Dataset], code_version: str, family: str, threshold: float,
          components: int, method: str, seed: int, trainjob_min_bytes: int,
          trainjob_result_uri: str, trainjob_nodes: int, trainjob_namespace: str,
          trainjob_env_secret: str, trainjob_timeout_s: float, node_cpu: str,
          node_memory: str, max_memory: int, model: Output[Model], metrics: Output[Metrics]):
    """Fit in this pod, or, for data above ``trainjob_min_bytes`` (0: never), as a Kubeflow
    Trainer TrainJob of ``trainjob_nodes`` pods of ``node_cpu``/``node_memory`` each. In the
    pod the table is streamed when it would not fit in the pod's memory, or with
    ``max_memory`` bytes (0: automatic)."""
    from mleops.pipeline import steps
    from mleops.pipeline.trainjob import TrainJobSettings

    job = TrainJobSettings(min_bytes=trainjob_min_bytes, result_uri=trainjob_result_uri,
                           nodes=trainjob_nodes, namespace=trainjob_namespace,
                           env_secret=trainjob_env_secret, cpu=node_cpu, memory=node_memory,
                           timeout_s=trainjob_timeout_s)
    art = steps.train(train_data.path, model.path, family=family, threshold=threshold,
                      k=components, method=method, seed=seed, trainjob=job,
                      max_memory=max_memory)
    params = art.params if isinstance(art.params, dict) else {"keys": len(art)}  # a fleet
    model.metadata.update({"family": art.family["name"], "params": params,
                           "device": art.metadata.get("device", ""),
                           "trainjob": art.metadata.get("trainjob", ""),
                           "code_version": code_version})
    steps.write_metrics(metrics, steps.fit_metrics(art))
    metrics.metadata["device"] = art.metadata.get("device", "")


@component
def evaluate(model: Input[Model], heldout: Input[Dataset], tracking_uri: str, model_name: str,
             seed: int, run_tag: str, scores: Output[Artifact], metrics: Output[Metrics]):
    from mleops.pipeline import steps

    info = steps.evaluate(model.path, heldout.path, scores.path, tracking_uri=tracking_uri,
                          model_name=model_name, seed=seed, run_tag=run_tag)
    steps.write_metrics(metrics, info["metrics"])
    scores.metadata["champion_version"] = info["champion_version"]


@component
def gate(scores: Input[Artifact], tolerance: float, confidence: float, test: str,
         ks_max: float, coverage_tol: float, ece_max: float, on_inconclusive: str,
         fleet_fdr: float, decision: Output[Artifact], report: Output[HTML]) -> bool:
    from mleops.gate import GateConfig
    from mleops.pipeline import steps

    cfg = GateConfig(tolerance=tolerance, confidence=confidence, test=test, ks_max=ks_max,
                     coverage_tol=coverage_tol, ece_max=ece_max,
                     on_inconclusive=on_inconclusive)
    out = steps.gate(scores.path, decision.path, report.path, config=cfg, fleet_fdr=fleet_fdr)
    decision.metadata.update({"passed": out["passed"], "reasons": out["reasons"]})
    return bool(out["passed"])


@component
def record(model: Input[Model], scores: Input[Artifact], decision: Input[Artifact],
           report: Input[HTML], heldout: Input[Dataset], tracking_uri: str, model_name: str,
           run_tag: str, params_json: str, git_commit: str, code_version: str,
           candidate_key: str, register: bool) -> str:
    """Log the run; registers a version only when ``register`` (the gate passed), re-gated
    on ``heldout`` if the champion moved meanwhile."""
    import json

    from mleops.pipeline import steps

    out = steps.record(model.path, scores.path, decision.path, report.path,
                       tracking_uri=tracking_uri, model_name=model_name, run_tag=run_tag,
                       params=json.loads(params_json), register=register,
                       git_commit=git_commit, code_version=code_version,
                       candidate_key=candidate_key, heldout_path=heldout.path)
    return out["registered_version"] or ""


@component
def deploy(model_name: str, version: str, tracking_uri: str, namespace: str,
           canary_traffic: int, artifacts_destination: str, apply: bool, target: str,
           deployment_mode: str, run_tag: str, manifest: Output[Artifact]):
    """Render (and with ``apply``, apply) the SeldonDeployment, or for ``target`` "kserve"
    the InferenceService in ``deployment_mode``, with the new canary."""
    from mleops.pipeline import steps

    out = steps.deploy(model_name, version, manifest.path, tracking_uri=tracking_uri,
                       namespace=namespace, canary_traffic=canary_traffic,
                       artifacts_destination=artifacts_destination, apply=apply,
                       target=target, deployment_mode=deployment_mode, run_tag=run_tag)
    manifest.metadata.update(out)
