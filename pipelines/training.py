"""The training pipeline: ingest -> split -> train -> evaluate -> gate -> register | log.

``python -m mleops_pipelines.training`` (or ``mleops pipeline compile``) writes training.yaml.
Data steps are cached by content hash (passed as parameters), training by its inputs, and all
three by ``code_version`` (the mleops version, a hash of its code, the image digest where
known). Steps that read or write the registry, and the gate that decides on what evaluate
read (evaluate, gate, register/log, deploy), are never cached: their caching is switched off
in the definition, which the runner keeps (it leaves the client's ``enable_caching`` None).
"""


import os

from kfp import dsl

from mleops.gate import DEFAULT_TOLERANCE, INCONCLUSIVE_POLICIES
from mleops_components import training as c

NAME = "mleops-training"
YAML = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training.yaml")


@dsl.pipeline(name=NAME, description="Fit, evaluate against the champion, gate, register.")
def training_pipeline(
    data_uri: str,
    family: str,
    model_name: str,
    data_hash: str = "",
    validation_data_uri: str = "",
    validation_data_hash: str = "",
    column: str = "",
    censor_column: str = "",
    weights_column: str = "",
    covariates: str = "",
    time_column: str = "",
    key_column: str = "",
    fleet_fdr: float = 0.05,
    threshold: float = 0.0,
    components: int = 0,
    method: str = "auto",
    seed: int = 0,
    holdout_fraction: float = 0.2,
    time_ordered: bool = False,
    tracking_uri: str = "",
    gate_tolerance: float = DEFAULT_TOLERANCE,
    gate_confidence: float = 0.95,
    gate_test: str = "z",
    gate_on_inconclusive: str = INCONCLUSIVE_POLICIES[0],
    gate_ks_max: float = 0.05,
    gate_coverage_tol: float = 0.05,
    gate_ece_max: float = 0.05,
    train_cpu: str = "1",
    train_memory: str = "2G",
    train_accelerator_type: str = "",
    train_accelerator_limit: str = "1",
    train_max_memory: int = 0,
    deploy_namespace: str = "models",
    deploy_canary_traffic: int = 10,
    deploy_apply: bool = False,
    deploy_target: str = "seldon",
    deploy_mode: str = "Serverless",
    trainjob_min_bytes: int = 0,
    trainjob_result_uri: str = "",
    trainjob_nodes: int = 2,
    trainjob_namespace: str = "models",
    trainjob_env_secret: str = "",
    trainjob_timeout_s: float = 3600.0,
    artifacts_destination: str = "",
    run_tag: str = "",
    run_params_json: str = "{}",
    git_commit: str = "",
    code_version: str = "",
    candidate_key: str = "",
):
    # The content hashes make the cache key follow the data, not just its URI: the same file
    # reuses ingest/split/train outputs, a changed file re-runs them (and ingest verifies it).
    ing = c.ingest(data_uri=data_uri, data_hash=data_hash, code_version=code_version,
                   family=family, column=column,
                   censor_column=censor_column, weights_column=weights_column,
                   covariates=covariates, time_column=time_column, key_column=key_column,
                   threshold=threshold,
                   components=components)
    spl = c.split(dataset=ing.outputs["dataset"], validation_data_uri=validation_data_uri,
                  validation_data_hash=validation_data_hash, code_version=code_version,
                  family=family,
                  threshold=threshold, components=components, seed=seed,
                  holdout_fraction=holdout_fraction, time_ordered=time_ordered)
    # Above trainjob_min_bytes the train step itself submits a Kubeflow Trainer TrainJob and
    # waits for it (a conditional in the step, not a pipeline branch): one task, one model.
    trn = c.train(train_data=spl.outputs["train"], code_version=code_version, family=family,
                  threshold=threshold, components=components, method=method, seed=seed,
                  trainjob_min_bytes=trainjob_min_bytes, trainjob_result_uri=trainjob_result_uri,
                  trainjob_nodes=trainjob_nodes, trainjob_namespace=trainjob_namespace,
                  trainjob_env_secret=trainjob_env_secret, trainjob_timeout_s=trainjob_timeout_s,
                  node_cpu=train_cpu, node_memory=train_memory, max_memory=train_max_memory)
    trn.set_cpu_request(train_cpu).set_memory_request(train_memory)
    trn.set_accelerator_type(train_accelerator_type).set_accelerator_limit(
        train_accelerator_limit)
    ev = c.evaluate(model=trn.outputs["model"], heldout=spl.outputs["heldout"],
                    tracking_uri=tracking_uri, model_name=model_name, seed=seed,
                    run_tag=run_tag).set_caching_options(False)  # reads the current champion
    gt = c.gate(scores=ev.outputs["scores"], tolerance=gate_tolerance,
                confidence=gate_confidence, test=gate_test, ks_max=gate_ks_max,
                coverage_tol=gate_coverage_tol, ece_max=gate_ece_max,
                on_inconclusive=gate_on_inconclusive,
                fleet_fdr=fleet_fdr).set_caching_options(False)
    common = dict(model=trn.outputs["model"], scores=ev.outputs["scores"],
                  decision=gt.outputs["decision"], report=gt.outputs["report"],
                  heldout=spl.outputs["heldout"], tracking_uri=tracking_uri, model_name=model_name, run_tag=run_tag,
                  params_json=run_params_json, git_commit=git_commit,
                  code_version=code_version, candidate_key=candidate_key)
    with dsl.If(gt.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
        reg = c.record(register=True, **common).set_caching_options(False)
        reg.set_display_name("register")
        c.deploy(model_name=model_name, version=reg.output, tracking_uri=tracking_uri,
                 namespace=deploy_namespace, canary_traffic=deploy_canary_traffic,
                 artifacts_destination=artifacts_destination, apply=deploy_apply,
                 target=deploy_target, deployment_mode=deploy_mode,
                 run_tag=run_tag).set_caching_options(False)
    with dsl.Else(name="gate-rejected"):
        c.record(register=False, **common).set_caching_options(False).set_display_name(
            "log-rejected")


def compile_yaml(path: str = YAML) -> str:
    from kfp import compiler

    compiler.Compiler().compile(training_pipeline, package_path=path)
    return path


if __name__ == "__main__":
    print(compile_yaml())
