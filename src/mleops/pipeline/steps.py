"""What each pipeline step does. KFP components call these with artifact paths; tests and
the CLI can call them directly. Every decision of the pipeline lives here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict

import numpy as np

from mleops._config import enable_compilation_cache
from mleops.artifact import ModelArtifact
from mleops.errors import DataError
from mleops.fleet_artifact import FleetArtifact
from mleops.pipeline.dataset import (
    ColumnSpec,
    Table,
    check_validation,
    load_source,
    read_dataset,
    split_indices,
    write_table,
)
from mleops.pipeline.failure import RUN_TAG, reports_failure
from mleops.pipeline.fleet_steps import (
    evaluate_fleet,
    fleet_metrics,
    gate_fleet,
    is_fleet,
    merged_fleet,
    train_fleet,
)
from mleops.pipeline.provenance import GIT_COMMIT_ENV
from mleops.pipeline.regate import (
    note_overlap,
    regate,
    register_regated,
    score_champion,
)
from mleops.pipeline.trainjob import TrainJobSettings, check_plan, fit_on_trainjob, needs_trainjob

SCORES_FILE = "scores.npz"
CALIB_FILE = "calibration.json"
DECISION_FILE = "decision.json"


def family_options(family: str, threshold=None, k=None) -> dict:
    """Pipeline parameters are never None (KFP): keep only the options the family takes
    (``Family.option_names``); 0 means "the family's default" for ``k``."""
    from mleops.families import family_class

    given = {"threshold": float(threshold or 0.0), "k": int(k) if k else None}
    return {n: given[n] for n in family_class(family).option_names if given.get(n) is not None}


def _check_hash(t: Table, expect: str, what: str) -> None:
    if expect and t.meta["data_hash"] != expect:
        raise DataError(f"{what} changed since the run was submitted (sha256 "
                        f"{t.meta['data_hash'][:12]}..., expected {expect[:12]}...)")


@reports_failure("ingest")
def ingest(data_uri: str, out_path: str, *, family: str, spec: ColumnSpec,
           threshold: float | None = None, k: int | None = None, expect_hash: str = "") -> dict:
    """Validate the user's data for the family and store it in the pipeline schema."""
    t = load_source(data_uri, spec, family, **family_options(family, threshold, k),
                    what="training data")
    _check_hash(t, expect_hash, f"data at {data_uri}")
    write_table(t, out_path)
    return t.meta


@reports_failure("split")
def split(dataset_path: str, train_path: str, heldout_path: str, *, seed: int,
          holdout_fraction: float, time_ordered: bool, validation_uri: str = "",
          validation_hash: str = "", family: str = "", threshold=None, k=None) -> dict:
    """Held-out rows: the validation data when given (independent of how training data were
    collected), else a deterministic split (seeded, or the latest rows for time series)."""
    t = read_dataset(dataset_path)
    if validation_uri:
        # Validation rows use the training data's column mapping (its resolved response).
        spec = ColumnSpec(**{**t.meta["spec"], "column": t.meta["response"]})
        held = check_validation(load_source(validation_uri, spec, family, what="validation data",
                                            **family_options(family, threshold, k)),
                                validation_uri)
        _check_hash(held, validation_hash, f"validation data at {validation_uri}")
        train = t
    else:
        tr, ho = split_indices(t.n, seed=seed, holdout_fraction=holdout_fraction,
                               time_ordered=time_ordered, order=t.order)
        train, held = t.take(tr), t.take(ho)
    write_table(train, train_path)
    write_table(held, heldout_path)
    return {"n_train": train.n, "n_heldout": held.n,
            "heldout_source": "validation" if validation_uri else "split"}


def _fit_args(t: Table) -> dict:
    return {"weights": t.weight, "event": t.event, "X": t.X,
            "features": list(t.features) or None}


@reports_failure("train")
def train(train_path: str, model_dir: str, *, family: str, threshold=None, k=None,
          method: str = "auto", seed: int = 0, trainjob: TrainJobSettings | None = None,
          api=None, max_memory: int = 0) -> ModelArtifact:
    """Fit the family; the artifact records provenance and the device JAX ran on.

    With ``trainjob`` and data above its ``min_bytes``, the fit runs as a Kubeflow Trainer
    TrainJob instead (``mleops.pipeline.trainjob``; ``api``: a CustomObjectsApi) and the
    artifact is built from its result the same way. A table larger than this process'
    memory (or any, with ``max_memory`` bytes) is streamed (``mleops.pipeline.streamed``)."""
    enable_compilation_cache()  # a task is a fresh interpreter: reuse the last run's kernels
    from mleops.pipeline.overlap import sketch
    from mleops.pipeline.streamed import fit_table_streamed, streamed_source, table_meta

    opts = family_options(family, threshold, k)
    meta = table_meta(train_path)
    if meta.get("key_names"):  # a fleet: one model per key (fleet_steps)
        return train_fleet(read_dataset(train_path), model_dir, family=family, options=opts,
                           method=method, meta=meta)
    extra: dict = {}
    on_job = trainjob is not None and needs_trainjob(meta.get("source", ""), trainjob.min_bytes)
    source = None if on_job else streamed_source(train_path, family, max_memory)
    if source is not None:
        r, rows_sketch = fit_table_streamed(source, tuple(meta.get("features", ())), family,
                                            max_memory=max_memory, method=method,
                                            options=opts)
        n, extra["streamed"] = rows_sketch["n_rows"], {"batch_rows": r.extra["batch_rows"]}
    else:
        t = read_dataset(train_path)
        n, rows_sketch = t.n, sketch(t)
        if on_job:
            check_plan(trainjob, holdout_split=t.n != meta.get("n_rows", t.n))
            r, extra["trainjob"] = fit_on_trainjob(meta, trainjob, family=family,
                                                   options=opts, method=method, api=api)
        else:
            from mleops.fit import fit

            r = fit(t.x, family, method=method, seed=seed, **opts, **_fit_args(t))
    art = ModelArtifact.from_fit(r, data_hash=meta.get("data_hash", ""), n_train=n,
                                 source=meta.get("source", ""), train_rows_sketch=rows_sketch,
                                 **extra)
    art.save(model_dir)
    return art


def write_metrics(artifact, metrics: dict[str, float]) -> None:
    """KFP Metrics: logged into the artifact's metadata *and* written to its file, so the
    artifact exists on disk (caches treat an artifact without a file as missing)."""
    for k, v in metrics.items():
        artifact.log_metric(k, float(v))
    os.makedirs(os.path.dirname(os.path.abspath(artifact.path)), exist_ok=True)
    with open(artifact.path, "w") as f:
        json.dump(metrics, f, indent=2)


def fit_metrics(art) -> dict[str, float]:
    if isinstance(art, FleetArtifact):
        return fleet_metrics(art)
    return {"train_loglik": art.loglik, "train_n": float(art.n_obs),
            "fit_iterations": float(art.iterations), "fit_converged": float(art.converged)}


@reports_failure("evaluate")
def evaluate(model_dir: str, heldout_path: str, out_dir: str, *, tracking_uri: str = "",
             model_name: str = "", seed: int = 0, run_tag: str = "") -> dict:
    """Per-row held-out log-likelihood of the candidate and of the champion on the same rows,
    plus calibration of the candidate. Writes scores.npz and calibration.json. (``run_tag``
    only names the pipeline's MLflow run should this step fail: ``failure``.)"""
    enable_compilation_cache()
    from mleops.gate.calibration import calibration, heldout_loglik, summary_metrics

    held = read_dataset(heldout_path)
    if is_fleet(model_dir):
        return evaluate_fleet(model_dir, held, out_dir, tracking_uri=tracking_uri,
                              model_name=model_name, seed=seed, scores_file=SCORES_FILE,
                              calib_file=CALIB_FILE)
    art = ModelArtifact.load(model_dir)
    rows = art.modeled_rows(held.x, event=held.event, X=held.X)
    cand = heldout_loglik(art, rows["x"], event=rows["event"], X=rows["X"])
    calib = calibration(art, rows["x"], event=rows["event"], X=rows["X"], seed=seed)
    champ, champ_version, ov = None, "", None
    if model_name:
        from mleops.registry import Registry

        found = Registry(tracking_uri or None).champion(model_name)
        if found is not None:
            champ_version, champ_art = found
            champ, ov = score_champion(held, art, champ_version, champ_art)
    os.makedirs(out_dir, exist_ok=True)
    arrays = {"candidate": cand}
    if champ is not None:
        arrays["champion"] = champ
    np.savez(os.path.join(out_dir, SCORES_FILE), **arrays)
    info = {"calibration": calib, "champion_version": champ_version,
            "metrics": summary_metrics(cand, calib)}
    if champ is not None:
        info["champion_train_overlap"] = ov
        info["metrics"]["champion_heldout_avg_loglik"] = float(np.mean(champ))
    with open(os.path.join(out_dir, CALIB_FILE), "w") as f:
        json.dump(info, f, indent=2)
    return info


def load_scores(scores_dir: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    with np.load(os.path.join(scores_dir, SCORES_FILE), allow_pickle=False) as z:
        cand = z["candidate"]
        champ = z["champion"] if "champion" in z.files else None
        keys = z["keys"] if "keys" in z.files else None
    with open(os.path.join(scores_dir, CALIB_FILE)) as f:
        info = json.load(f)
    if keys is not None:
        info["row_keys"] = keys  # a fleet's: each row's key
    return cand, champ, info


@reports_failure("gate")
def gate(scores_dir: str, decision_dir: str, report_html: str, *, config,
         fleet_fdr: float = 0.05) -> dict:
    """Paired held-out likelihood comparison + calibration decision.

    Writes ``decision_dir``/{decision.json, pit.png} and the self-contained HTML report (the
    plot is embedded) to ``report_html``.
    """
    from mleops.gate.decision import decide
    from mleops.gate.report import write_report

    cand, champ, info = load_scores(scores_dir)
    if info.get("fleet"):
        return gate_fleet(cand, champ, info["row_keys"], info, decision_dir, report_html,
                          config=config, fdr=fleet_fdr, decision_file=DECISION_FILE)
    decision = decide(cand, champ, info["calibration"], config)
    note_overlap(decision, info.get("champion_train_overlap"))
    # the configuration goes with the decision: a re-gate (regate.py) decides the same way
    out = {**decision.to_dict(), "champion_version": info.get("champion_version", ""),
           "config": asdict(config)}
    os.makedirs(decision_dir, exist_ok=True)
    with open(os.path.join(decision_dir, DECISION_FILE), "w") as f:
        json.dump(out, f, indent=2)
    paths = write_report(info["calibration"], decision, decision_dir,
                         title=f"mleops gate: {decision.outcome.upper()}")
    os.makedirs(os.path.dirname(os.path.abspath(report_html)), exist_ok=True)
    shutil.move(paths["report_html"], report_html)
    return out


@reports_failure("record")
def record(model_dir: str, scores_dir: str, decision_dir: str, report_html: str, *,
           tracking_uri: str, model_name: str, run_tag: str, params: dict,
           register: bool, git_commit: str = "", code_version: str = "",
           candidate_key: str = "", heldout_path: str = "") -> dict:
    """Log the candidate as an MLflow run; register a version only if ``register``.

    Rejected candidates are logged (so the rejection is auditable) but never registered; a
    candidate that already is a version (same ``candidate_key``) is logged and tagged
    ``mleops.duplicate_of``, and nothing is registered. If the champion moved since the
    gate, the candidate is re-gated against the new one on ``heldout_path``'s rows
    (:mod:`~mleops.pipeline.regate`) and registered or rejected on that.
    """
    enable_compilation_cache()
    from mleops.gate.decision import outcome_of
    from mleops.registry import (
        CANDIDATE_TAG,
        DUPLICATE_TAG,
        DuplicateVersion,
        Registry,
        RegistryError,
    )

    fleet = is_fleet(model_dir)
    art = FleetArtifact.load(model_dir) if fleet else ModelArtifact.load(model_dir)
    cand, _, info = load_scores(scores_dir)
    with open(os.path.join(decision_dir, DECISION_FILE)) as f:
        decision = json.load(f)
    stats = {f"gate_{k}": float(v) for k, v in decision["stats"].items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
    metrics = {**info["metrics"], **fit_metrics(art), **stats,
               "gate_passed": float(decision["passed"])}
    lineage = {RUN_TAG: run_tag, "mleops.data_hash": art.metadata.get("data_hash", ""),
               "mleops.git_commit": git_commit or os.environ.get(GIT_COMMIT_ENV, ""),
               "mleops.family": art.family["name"], "mleops.device": art.metadata.get("device", ""),
               "mleops.code_version": code_version, CANDIDATE_TAG: candidate_key}
    tags = {**lineage, "mleops.gate": outcome_of(decision),
            "mleops.champion_version_compared": decision.get("champion_version", "")}
    reg = Registry(tracking_uri or None)
    report_dir = tempfile.mkdtemp(prefix="mleops-report-")
    shutil.copy(report_html, os.path.join(report_dir, "report.html"))
    for name in os.listdir(decision_dir):
        shutil.copy(os.path.join(decision_dir, name), report_dir)
    run_params = {**params, "family": art.family["name"],
                  "data_hash": art.metadata.get("data_hash", "")}
    if fleet:  # the version is the merge the gate decided, tagged with both parents
        logged = merged_fleet(model_dir, decision, reg, model_name) if register else art
        lineage.update(logged.digests())
        lineage["mleops.fleet.parent_champion"] = decision.get("champion_version", "")
        run_id = reg.log_fleet_run(experiment=model_name, params=run_params, metrics=metrics,
                                   fleet=logged, report_dir=report_dir, tags=tags,
                                   registered=register)
    else:
        run_id = reg.log_training_run(experiment=model_name, params=run_params,
                                      metrics=metrics, artifact=art, report_dir=report_dir,
                                      tags=tags, registered=register)
    # The decision itself is an artifact of the run (every number behind it).
    reg.log_dict(run_id, decision, "gate/decision.json")
    version, decisions = None, [decision]
    current = [run_id]  # a fleet's re-gate registers a new run (its new merge)
    if register:
        from mleops.pipeline.fleet_regate import again_for_fleet

        fleet_again = again_for_fleet(
            decision, cand, info, heldout_path=heldout_path, art=art, registry=reg,
            model_name=model_name, run=dict(params=run_params, metrics=metrics,
                                            report_dir=report_dir, tags=tags),
            lineage=lineage, current=current)

        def again(champion: str):
            if fleet:
                if not heldout_path:
                    raise RegistryError(f"the champion of {model_name!r} moved since the "
                                        f"gate and no held-out rows were given to re-gate on")
                return fleet_again(champion)
            if not heldout_path:
                raise RegistryError(f"the champion of {model_name!r} moved since the gate "
                                    f"and no held-out rows were given to re-gate on")
            return regate(decision, cand, info["calibration"], held=read_dataset(heldout_path),
                          art=art, registry=reg, model_name=model_name,
                          champion_version=champion)

        try:
            version, decisions = register_regated(reg, model_name, run_id, lineage, decision,
                                                  again)
        except DuplicateVersion as e:
            reg.mark_run(current[0], {"mleops.registered": "duplicate",
                                      DUPLICATE_TAG: e.version})
            return {"run_id": current[0], "registered_version": None,
                    "passed": decision["passed"], "duplicate_of": e.version}
        except BaseException as e:  # the run says what happened: not registered, and why
            reg.mark_run(current[0], {"mleops.registered": "failed",
                                      "mleops.register_error": f"{type(e).__name__}: {e}"})
            raise
    return {"run_id": current[0], "registered_version": version,
            "passed": decisions[-1]["passed"], "regated": len(decisions) - 1}


@reports_failure("deploy")
def deploy(model_name: str, version: str, manifest_path: str, *, tracking_uri: str = "",
           namespace: str = "models", canary_traffic: int = 10, artifacts_destination: str = "",
           apply: bool = False, deployment_name: str = "", target: str = "seldon",
           deployment_mode: str = "Serverless", run_tag: str = "") -> dict:
    """The serving manifest for a freshly registered version: the champion keeps serving and
    the new challenger gets ``canary_traffic`` percent (a first model is the only predictor).

    ``target`` "seldon" renders a SeldonDeployment, "kserve" an InferenceService in
    ``deployment_mode``. Validated against the CRD (``release_manifest``, shared with
    ``mleops deploy render``); applied only when ``apply``."""
    from mleops.deploy import apply_manifest, model_artifact_uri, release_manifest, to_yaml
    from mleops.deploy import deployment_name as default_deployment_name
    from mleops.registry import Registry

    reg = Registry(tracking_uri or None)
    # the champion's number only (a fleet version has no model.json to fetch)
    champion = next((v["version"] for v in reg.list_versions(model_name)
                     if "champion" in v["aliases"]), None) or version
    canary = version if version != champion else None
    try:
        model_artifact_uri(reg, model_name, champion,
                           artifacts_destination=artifacts_destination or None)
    except DataError as e:
        if apply:
            raise
        # Registration stands; rendering needs the artifact store's address. Say so loudly in
        # the step's output instead of failing a run whose model was already registered.
        os.makedirs(os.path.dirname(os.path.abspath(manifest_path)), exist_ok=True)
        with open(manifest_path, "w") as f:
            f.write(f"# not rendered: {e}\n")
        return {"champion": champion, "canary": canary, "rendered": False, "reason": str(e),
                "validated": False, "applied": False}
    manifest = release_manifest(
        reg, deployment_name or default_deployment_name(model_name), model_name=model_name,
        version=champion, canary_version=canary,
        artifacts_destination=artifacts_destination or None,
        canary_traffic=canary_traffic if canary else 0, namespace=namespace, target=target,
        **({"deployment_mode": deployment_mode} if target == "kserve" else {}))
    os.makedirs(os.path.dirname(os.path.abspath(manifest_path)), exist_ok=True)
    with open(manifest_path, "w") as f:
        f.write(to_yaml(manifest))
    applied = apply_manifest(manifest) if apply else None
    return {"champion": champion, "canary": canary, "rendered": True, "validated": True,
            "applied": bool(applied), "kind": manifest["kind"]}
