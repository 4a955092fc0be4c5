"""The train step as a Kubeflow Trainer v2 TrainJob, for data too large for one pod.

The pipeline keeps one ``train`` task; its step function decides (a plain conditional, no KFP
branch): when ``min_bytes`` is set and the training data's files are larger
(:func:`mleops.batches.scan`'s ``bytes_on_disk``), it renders the TrainJob running
``mleops fit DATA ... --distributed --output RESULT`` on ``nodes`` pods, submits it, waits
for a Complete or Failed condition, and reads the result JSON where process 0 wrote it (an
object store: ``mleops.storage.locate``). The pipeline then goes on with that fit exactly as
with an in-process one (same ``ModelArtifact``, same metrics).

The pods read the user's data themselves, so it must be an object-store URI; and they fit all
of it, so the held-out rows must come from ``--validation-data`` (a split of the same data
would put held-out rows into the fit).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from types import SimpleNamespace

from mleops.errors import DataError
from mleops.storage import is_remote

RESULT_FILE = "fit.json"


@dataclass(frozen=True)
class TrainJobSettings:
    """When and how the train step runs as a TrainJob (``min_bytes`` 0: never)."""

    min_bytes: int = 0
    result_uri: str = ""  # object-store prefix; the job writes <prefix>/<job name>/fit.json
    nodes: int = 2
    namespace: str = "models"
    env_secret: str = ""  # secret with AWS_* keys for the pods' object-store reads and writes
    cpu: str = "1"
    memory: str = "2Gi"
    timeout_s: float = 3600.0
    poll_s: float = 10.0


def needs_trainjob(data_uri: str, min_bytes: int) -> bool:
    """True when ``data_uri``'s files hold more than ``min_bytes`` (0: never); DataError
    when they do but the pods could not read them (a local path)."""
    if min_bytes < 0:
        raise DataError(f"--trainjob-min-bytes {min_bytes}: a size in bytes, 0 = never")
    if not min_bytes:
        return False
    from mleops.batches import scan

    size = scan(data_uri).bytes_on_disk
    if size <= min_bytes:
        return False
    if not is_remote(data_uri):
        raise DataError(f"--data {data_uri}: {size} bytes, above --trainjob-min-bytes "
                        f"{min_bytes}, so a TrainJob fits it, and its pods cannot read a local "
                        f"path; give an object-store URI (s3://, gs://, ...)")
    return True


def check_plan(settings: TrainJobSettings, *, holdout_split: bool) -> None:
    """What a TrainJob fit needs besides remote data, refused before any pod starts."""
    if holdout_split:
        raise DataError("a TrainJob fits every row of --data: give --validation-data for the "
                        "held-out rows (a split of --data would train on them)")
    if not settings.result_uri:
        raise DataError("a TrainJob fit needs --trainjob-result-uri (an object-store prefix "
                        "its pods write the result to)")
    if not isinstance(settings.nodes, int) or settings.nodes < 1:
        raise DataError(f"--trainjob-nodes {settings.nodes!r}: at least 1")


def job_name(family: str) -> str:
    """A fresh TrainJob name (a TrainJob's spec is immutable: every fit is a new one)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", family.lower()).strip("-")[:24].rstrip("-")
    return f"fit-{slug}-{uuid.uuid4().hex[:8]}"


def result_location(settings: TrainJobSettings, name: str) -> str:
    """Where the job ``name`` writes its result JSON."""
    return f"{settings.result_uri.rstrip('/')}/{name}/{RESULT_FILE}"


def render_fit_job(meta: dict, settings: TrainJobSettings, *, name: str, family: str,
                   options: dict, method: str) -> dict:
    """The validated TrainJob fitting ``family`` to the data an ingested table came from,
    with the same column roles (``meta``: the table's ``source``, ``response``, ``spec``)."""
    from mleops.deploy.trainjob import render_trainjob, validate_trainjob

    spec = meta.get("spec") or {}
    manifest = render_trainjob(
        name, data_uri=meta["source"], family=family, num_nodes=settings.nodes,
        namespace=settings.namespace, cpu=settings.cpu, memory=settings.memory,
        env_secret_ref_name=settings.env_secret or None, column=meta["response"],
        censor_column=spec.get("censor_column") or None,
        weights_column=spec.get("weights_column") or None,
        covariates=list(spec.get("covariates") or []) or None, method=method,
        output=result_location(settings, name), **options)
    return validate_trainjob(manifest)


def read_result(uri: str) -> dict:
    """The result JSON (``FitResult.to_dict``) a job wrote at ``uri``."""
    from mleops.storage import first_line, locate

    f, path = locate(uri)
    try:
        with f.open_input_stream(path) as stream:
            text = stream.read().decode()
    except Exception as e:  # FileNotFoundError, OSError from the store
        raise DataError(f"the TrainJob's result {uri} cannot be read: {first_line(e)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"the TrainJob's result {uri} is not JSON: {e}") from None


def fit_of(result: dict) -> SimpleNamespace:
    """What ``ModelArtifact.from_fit`` reads of a FitResult, from its JSON form."""
    try:
        return SimpleNamespace(
            family=dict(result["family_options"]), param_names=tuple(result["params"]),
            params=dict(result["params"]), cov=result["cov"], loglik=result["loglik"],
            n_obs=result["n_obs"], converged=result["converged"],
            iterations=result["iterations"], method=result["method"],
            device=result.get("device", ""))
    except (KeyError, TypeError) as e:
        raise DataError(f"the TrainJob's result lacks {e} (not `mleops fit` output)") from None


def fit_on_trainjob(meta: dict, settings: TrainJobSettings, *, family: str, options: dict,
                    method: str, name: str = "", api=None) -> tuple[SimpleNamespace, str]:
    """Render, submit and wait for the TrainJob; its fit and ``namespace/name``.
    DeployError when the job fails or times out, DataError when its result is unusable."""
    from mleops.deploy.trainjob import submit_and_wait

    name = name or job_name(family)
    manifest = render_fit_job(meta, settings, name=name, family=family, options=options,
                              method=method)
    submit_and_wait(manifest, api=api, timeout_s=settings.timeout_s, poll_s=settings.poll_s)
    return fit_of(read_result(result_location(settings, name))), f"{settings.namespace}/{name}"


__all__ = ["TrainJobSettings", "check_plan", "fit_of", "fit_on_trainjob", "job_name",
           "needs_trainjob", "read_result", "render_fit_job", "result_location"]
