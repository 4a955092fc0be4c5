"""Training runs in MLflow tracking: logging a fit, and reading runs back for other rooms.

A training run logs params, finite metrics, ``model.json`` and a pyfunc model whose only state
is that JSON (see :mod:`mleops.registry.pyfunc`; no pickle anywhere). Other rooms read runs
through these methods (metrics for the drift baseline, a pipeline run by its tag, a JSON
artifact), never through MLflow's client.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from typing import Any

from mleops.artifact import ModelArtifact
from mleops.registry.session import RegistryError, Session, error_code

MODEL_ID_TAG = "mleops.model_id"
FAILURE_TAG = "mleops.task_failure"  # JSON: the task that ended a pipeline run, and why


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else an embedded sqlite store in the working directory (made
    absolute: pipeline tasks may run in another directory)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlruns.db')}"


class Runs:
    """The run side of :class:`mleops.registry.Registry` (which adds versions and aliases)."""

    def __init__(self, tracking_uri: str | None = None, *, retries: int = 4,
                 backoff: float = 0.5, timeout: int = 30) -> None:
        self._session = Session(tracking_uri or default_tracking_uri(), retries=retries,
                                backoff=backoff, timeout=timeout)
        self.uri = self._session.uri
        self.client = self._session.client  # MLflow's client: for this package (and tests)

    # --- plumbing (retries, settings, error reading: session.py) ---------------------------
    def _call(self, fn, *args, **kwargs):
        return self._session.call(fn, *args, **kwargs)

    def _errors(self, what: str):
        return self._session.errors(what)

    def _quietly(self, fn, *args) -> None:
        self._session.quietly(fn, *args)

    def _env(self):
        return self._session.env()


    def _experiment_id(self, name: str) -> str:
        exp = self._call(self.client.get_experiment_by_name, name)
        if exp is None:
            try:
                return self._call(self.client.create_experiment, name)
            except Exception as e:  # somebody created it meanwhile
                if error_code(e) != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self._call(self.client.get_experiment_by_name, name)
        if exp.lifecycle_stage == "deleted":
            self._call(self.client.restore_experiment, exp.experiment_id)
        return exp.experiment_id


    # --- public API ------------------------------------------------------------------------
    def log_training_run(self, *, experiment: str, params: dict, metrics: dict,
                         artifact: ModelArtifact, report_dir: str | None = None,
                         tags: dict | None = None, registered: bool = False) -> str:
        """Record a fit as an MLflow run (pyfunc model + model.json + report); its run id.

        Non-finite or non-numeric metrics are skipped and named in tag ``mleops.skipped_metrics``;
        Tag ``mleops.registered`` never claims more than is done: ``pending`` when the run is
        to be registered (``register`` sets ``true`` once the version exists, a failed
        registration ``failed``), else ``false``. A run that fails half-way is marked FAILED,
        never left looking finished.
        """
        from mlflow.entities import Metric, Param

        from mleops.registry.pyfunc import log_pyfunc_model

        if report_dir is not None and not os.path.isdir(report_dir):
            raise RegistryError(f"report directory {report_dir} does not exist")
        now, good, skipped = int(time.time() * 1000), [], []
        for k, v in metrics.items():
            try:
                fv = float(v)
            except (TypeError, ValueError):
                fv = math.nan
            good.append(Metric(str(k), fv, now, 0)) if math.isfinite(fv) else skipped.append(k)
        ps = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        run_tags = {**{str(k): str(v) for k, v in (tags or {}).items()},
                    "mleops.family": str(artifact.family.get("name")),
                    "mleops.registered": "pending" if registered else "false"}
        if skipped:
            run_tags["mleops.skipped_metrics"] = ",".join(map(str, skipped))
        def log_model(run_id: str, tmp: str) -> str:
            path = artifact.save(tmp)
            with self._env():  # many calls inside: no retry, connection errors reported
                model_id = log_pyfunc_model(run_id, path, tmp)
            self._call(self.client.log_artifact, run_id, path)
            return model_id

        return self._record(f"logging a training run to experiment {experiment!r}",
                            experiment, run_tags, ps, good, report_dir, log_model)

    def _record(self, what: str, experiment: str, run_tags: dict, ps: list, good: list,
                report_dir: str | None, log_model) -> str:
        """Create the run, log params/metrics, the model (``log_model(run_id, tmp)`` -> its
        MLflow model id) and the report; FINISHED, or FAILED if any of it fails."""
        with self._errors(what):
            run_id = self._call(self.client.create_run, self._experiment_id(experiment),
                                tags=run_tags).info.run_id
            try:
                for i in range(0, max(len(ps), len(good)), 100):  # MLflow's batch limits
                    self._call(self.client.log_batch, run_id, metrics=good[i:i + 100],
                               params=ps[i:i + 100])
                with tempfile.TemporaryDirectory() as tmp:
                    model_id = log_model(run_id, tmp)
                if report_dir is not None:
                    self._call(self.client.log_artifacts, run_id, report_dir, "report")
                self._call(self.client.set_tag, run_id, MODEL_ID_TAG, model_id)
                self._call(self.client.set_terminated, run_id, "FINISHED")
            except BaseException:
                self._quietly(self.client.set_terminated, run_id, "FAILED")
                raise
        return run_id

    def log_fleet_run(self, *, experiment: str, params: dict, metrics: dict, fleet,
                      report_dir: str | None = None, tags: dict | None = None,
                      registered: bool = False) -> str:
        """Record a fleet (a :class:`~mleops.fleet_artifact.FleetArtifact`) as one run: the
        fleet's table under ``fleet/``, its digests as tags, and a pyfunc scoring rows by key.
        """
        from mlflow.entities import Metric, Param

        from mleops.registry import fleet_pyfunc
        from mleops.registry.pyfunc import log_code_model

        now = int(time.time() * 1000)
        good = [Metric(str(k), float(v), now, 0) for k, v in metrics.items()
                if isinstance(v, int | float) and math.isfinite(float(v))]
        ps = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        run_tags = {**{str(k): str(v) for k, v in (tags or {}).items()}, **fleet.digests(),
                    "mleops.family": str(fleet.family.get("name")), "mleops.kind": "fleet",
                    "mleops.registered": "pending" if registered else "false"}
        def log_model(run_id: str, tmp: str) -> str:
            path = fleet.save(os.path.join(tmp, "fleet"))
            with self._env():
                model_id = log_code_model(run_id, fleet_pyfunc.CODE, {"fleet": path}, tmp,
                                          signature=fleet_pyfunc.signature(fleet))
            self._call(self.client.log_artifacts, run_id, path, "fleet")
            return model_id

        return self._record(f"logging a fleet run to experiment {experiment!r}", experiment,
                            run_tags, ps, good, report_dir, log_model)

    def mark_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Best-effort tags on a run that something failed after (the error is raised anyway)."""
        for k, v in tags.items():
            self._quietly(self.client.set_tag, run_id, k, str(v)[:5000])

    def run_tags(self, run_id: str) -> dict[str, str]:
        with self._errors(f"reading the tags of run {run_id}"):
            return dict(self._call(self.client.get_run, run_id).data.tags)

    def log_dict(self, run_id: str, obj: Any, path: str) -> None:
        """A JSON artifact of the run (e.g. the gate decision with every number behind it)."""
        with self._errors(f"logging {path} to run {run_id}"):
            self._call(self.client.log_dict, run_id, obj, path)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The run's latest metric values."""
        with self._errors(f"reading metrics of run {run_id}"):
            return dict(self._call(self.client.get_run, run_id).data.metrics)

    def find_run(self, experiment: str, tag: str, value: str) -> str | None:
        """Id of the run in ``experiment`` tagged ``tag = value`` (newest first), else None."""
        with self._errors(f"searching experiment {experiment!r} for {tag}={value}"):
            exp = self._call(self.client.get_experiment_by_name, experiment)
            if exp is None:
                return None
            runs = self._call(self.client.search_runs, [exp.experiment_id],
                              filter_string=f"tags.`{tag}` = '{value}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def record_task_failure(self, experiment: str, tag: str, value: str,
                            failure: dict[str, Any]) -> str:
        """Mark the run tagged ``tag = value`` FAILED with ``failure`` (task, type, message) in
        tag :data:`FAILURE_TAG`, creating that run when none exists yet (a task before
        ``record`` failed). How a pipeline task on a cluster tells the CLI why it ended: the
        KFP API only says which task failed, MLflow is where both sides meet."""
        with self._errors(f"recording a task failure in experiment {experiment!r}"):
            run_id = self.find_run(experiment, tag, value)
            if run_id is None:
                run_id = self._call(self.client.create_run, self._experiment_id(experiment),
                                    tags={tag: value, "mlflow.runName":
                                          f"failed-{failure.get('task', 'task')}"}).info.run_id
            self._call(self.client.set_tag, run_id, FAILURE_TAG, json.dumps(failure)[:5000])
            self._call(self.client.set_terminated, run_id, "FAILED")
        return run_id

    def task_failure(self, experiment: str, tag: str, value: str) -> dict[str, Any] | None:
        """What :meth:`record_task_failure` recorded for the run tagged ``tag = value``."""
        run_id = self.find_run(experiment, tag, value)
        raw = self.run_tags(run_id).get(FAILURE_TAG) if run_id else None
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            return None
        return doc if isinstance(doc, dict) and {"task", "type", "message"} <= set(doc) \
            else None

    def run_json(self, run_id: str, path: str) -> Any:
        """A JSON artifact of the run, parsed."""
        with self._errors(f"reading {path} of run {run_id}"), \
                tempfile.TemporaryDirectory() as tmp:
            local = self._call(self.client.download_artifacts, run_id, path, tmp)
            with open(local) as f:
                return json.load(f)


__all__ = ["FAILURE_TAG", "MODEL_ID_TAG", "Runs", "default_tracking_uri"]
