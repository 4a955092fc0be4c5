"""The MLflow model registry as mleops uses it: log, register, champion/challenger, rollback.

A training run logs params, finite metrics, ``model.json`` and a pyfunc model whose only state
is that JSON (see :mod:`mleops.pyfunc_model`; no pickle anywhere). Registered versions carry
lineage tags; aliases ``champion``/``challenger`` mark what serves and what waits. Two kinds of
registered-model tags make alias moves undoable and auditable: ``mleops.champion_history``
(JSON list of earlier champions, newest last) and ``mleops.alias.<alias>`` (the version mleops
last pointed the alias at: MLflow silently drops an alias whose version is deleted, and this
lets us say so instead of reporting "no champion"). Server calls retry on connection failures
with exponential backoff, then raise :class:`RegistryError` naming the URI; a failure after a
change undoes the change.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from typing import Any

from ._mlflow_errors import RegistryError, _brief, _code, _unreachable
from .artifact import FILENAME, ModelArtifact

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG, ALIAS_TAG = "mleops.champion_history", "mleops.alias."
ROLLBACK_TAG, MODEL_ID_TAG = "mleops.last_rollback", "mleops.model_id"
MAX_HISTORY = 50
def _aliases(rm) -> dict[str, str]:
    """alias -> version as strings (sqlite stores return ints, the REST API strings)."""
    return {k: str(v) for k, v in (rm.aliases or {}).items()}


class Registry:
    """mleops' view of an MLflow tracking server / model registry at ``tracking_uri``.

    ``None`` means ``$MLFLOW_TRACKING_URI``, else an embedded ``sqlite:///<cwd>/mlruns.db``.
    MLflow's own HTTP retries are switched off during our calls (we retry ``retries`` times,
    sleeping ``backoff``, 2*``backoff``, ...); ``timeout`` is the per-request limit in seconds.
    """

    def __init__(self, tracking_uri: str | None = None, *, retries: int = 4,
                 backoff: float = 0.5, timeout: int = 30) -> None:
        import mlflow

        if retries < 1:
            raise ValueError("retries must be at least 1")
        self.uri = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                    or f"sqlite:///{os.path.abspath('mlruns.db')}")
        self.retries, self.backoff, self.timeout = int(retries), float(backoff), int(timeout)
        self.client = mlflow.MlflowClient(self.uri, registry_uri=self.uri)

    # --- plumbing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _env(self):
        """Our settings for the duration of our calls only: MLflow reads them per request.

        The global tracking URI is ours too: MLflow's sqlite registry resolves ``models:/``
        sources through it (not through the client's URI), and ``log_model`` logs to it.
        Restored by hand: ``mlflow.set_tracking_uri(None)`` would delete $MLFLOW_TRACKING_URI.
        """
        import mlflow
        from mlflow.tracking._tracking_service import utils

        new = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.timeout),
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # keep stdout for our output
        old = {k: os.environ.get(k) for k in (*new, "MLFLOW_TRACKING_URI")}
        old_uri = utils._tracking_uri
        os.environ.update(new)
        mlflow.set_tracking_uri(self.uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(old_uri)
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _call(self, fn, *args, **kwargs):
        """One server call, retried with exponential backoff while the server is unreachable."""
        delay, last = self.backoff, None
        for attempt in range(1, self.retries + 1):
            try:
                with self._env():
                    return fn(*args, **kwargs)
            except Exception as e:
                if not _unreachable(e):
                    raise
                last = e
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
        raise RegistryError(f"tracking server at {self.uri} unreachable after {self.retries} "
                            f"attempts: {_brief(last)}") from last

    @contextlib.contextmanager
    def _errors(self, what: str):
        """Report MLflow failures as RegistryError saying what was being done."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except RegistryError:
            raise
        except Exception as e:
            if _unreachable(e):
                raise RegistryError(f"tracking server at {self.uri} unreachable while {what}: "
                                    f"{_brief(e)}") from e
            if isinstance(e, MlflowException):
                raise RegistryError(f"{what} failed: {_brief(e)}") from e
            raise

    def _quietly(self, fn, *args) -> None:
        """Best-effort cleanup step: one attempt, failures ignored (the original error wins)."""
        with contextlib.suppress(Exception), self._env():
            fn(*args)

    def _model(self, name: str):
        """The registered model, or None when it does not exist."""
        try:
            return self._call(self.client.get_registered_model, name)
        except Exception as e:
            if _code(e) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _version(self, name: str, version: str, *, ready: bool = False):
        """The model version, None if missing/deleted (RegistryError then if ``ready``)."""
        try:
            mv = self._call(self.client.get_model_version, name, str(version))
        except Exception as e:
            if _code(e) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            mv = None
        if ready and mv is None:
            raise RegistryError(f"model {name!r} has no version {str(version)!r} (never "
                                f"created or deleted)")
        if ready and mv.status != "READY":
            raise RegistryError(f"model {name!r} version {version} is {mv.status}, not READY")
        return mv

    def _set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(self.client.set_registered_model_alias, name, alias, str(version))
        self._call(self.client.set_registered_model_tag, name, ALIAS_TAG + alias, str(version))

    def _set_tag(self, name: str, key: str, value: Any) -> None:
        self._call(self.client.set_registered_model_tag, name, key, json.dumps(value))

    def _restore(self, name: str, before, aliases: tuple[str, ...]) -> None:
        """Put ``aliases`` and mleops' tags back as they were in the snapshot ``before``."""
        c = self.client
        for alias in aliases:
            v = _aliases(before).get(alias)
            self._quietly(*((c.delete_registered_model_alias, name, alias) if v is None
                            else (c.set_registered_model_alias, name, alias, v)))
        for key in (HISTORY_TAG, ROLLBACK_TAG, *(ALIAS_TAG + a for a in aliases)):
            self._quietly(*((c.set_registered_model_tag, name, key, before.tags[key])
                            if key in before.tags else (c.delete_registered_model_tag, name, key)))

    def _existing(self, name: str):
        if (rm := self._model(name)) is None:
            raise RegistryError(f"no registered model {name!r}")
        return rm

    @staticmethod
    def _history(rm) -> list[str]:
        try:
            return [str(v) for v in json.loads(rm.tags.get(HISTORY_TAG, "[]"))]
        except (TypeError, ValueError):
            raise RegistryError(f"model {rm.name!r}: tag {HISTORY_TAG} is not a JSON list") from None

    def _experiment_id(self, name: str) -> str:
        exp = self._call(self.client.get_experiment_by_name, name)
        if exp is None:
            try:
                return self._call(self.client.create_experiment, name)
            except Exception as e:  # somebody created it meanwhile
                if _code(e) != "RESOURCE_ALREADY_EXISTS":
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
        ``registered`` goes to tag ``mleops.registered`` (``register`` sets it true). A run that
        fails half-way is marked FAILED, never left looking finished.
        """
        from mlflow.entities import Metric, Param

        from .pyfunc_model import log_pyfunc_model

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
                    "mleops.registered": str(bool(registered)).lower()}
        if skipped:
            run_tags["mleops.skipped_metrics"] = ",".join(map(str, skipped))
        with self._errors(f"logging a training run to experiment {experiment!r}"):
            run_id = self._call(self.client.create_run, self._experiment_id(experiment),
                                tags=run_tags).info.run_id
            try:
                for i in range(0, max(len(ps), len(good)), 100):  # MLflow's batch limits
                    self._call(self.client.log_batch, run_id, metrics=good[i:i + 100],
                               params=ps[i:i + 100])
                with tempfile.TemporaryDirectory() as tmp:
                    path = artifact.save(tmp)
                    with self._env():  # many calls inside: no retry, connection errors reported
                        model_id = log_pyfunc_model(run_id, path, tmp)
                    self._call(self.client.log_artifact, run_id, path)
                if report_dir is not None:
                    self._call(self.client.log_artifacts, run_id, report_dir, "report")
                self._call(self.client.set_tag, run_id, MODEL_ID_TAG, model_id)
                self._call(self.client.set_terminated, run_id, "FINISHED")
            except BaseException:
                self._quietly(self.client.set_terminated, run_id, "FAILED")
                raise
        return run_id

    def register(self, name: str, run_id: str, *, tags: dict) -> str:
        """New version of ``name`` from the run's model: champion if none yet, else challenger.

        ``tags`` (lineage: pipeline run, data hash, git commit ...) go on the version. If a
        step after creating the version fails, the version (and a model created for it) is
        deleted again: nothing stays half-registered.
        """
        with self._errors(f"registering run {run_id} as model {name!r}"):
            run = self._call(self.client.get_run, run_id)
            if run.info.lifecycle_stage == "deleted":
                raise RegistryError(f"run {run_id} is deleted; restore it before registering")
            if not (model_id := run.data.tags.get(MODEL_ID_TAG)):
                raise RegistryError(f"run {run_id} has no mleops model (tag {MODEL_ID_TAG}); "
                                    f"log it with log_training_run first")
            created = False
            if self._model(name) is None:
                try:
                    self._call(self.client.create_registered_model, name)
                    created = True
                except Exception as e:  # somebody created it meanwhile
                    if _code(e) != "RESOURCE_ALREADY_EXISTS":
                        raise
            mv = self._call(self.client.create_model_version, name, f"models:/{model_id}",
                            run_id=run_id, tags={str(k): str(v) for k, v in tags.items()},
                            model_id=model_id)
            try:
                self._version(name, mv.version, ready=True)
                before = self._call(self.client.get_registered_model, name)
                alias = CHALLENGER if CHAMPION in _aliases(before) else CHAMPION
                try:
                    self._set_alias(name, alias, mv.version)
                except BaseException:
                    self._restore(name, before, (alias,))
                    raise
                self._call(self.client.set_tag, run_id, "mleops.registered", "true")
            except BaseException:
                self._quietly(self.client.delete_model_version, name, mv.version)
                if created:
                    self._quietly(self.client.delete_registered_model, name)
                raise
        return str(mv.version)

    def load_alias(self, name: str, alias: str) -> tuple[str, ModelArtifact] | None:
        """(version, artifact) the alias points at; None if the model or alias does not exist.

        RegistryError when the alias points (or, per mleops' record, pointed) at a version
        that was deleted: serving "nothing" silently would hide a broken rollout.
        """
        with self._errors(f"loading {name!r}@{alias}"):
            if (rm := self._model(name)) is None:
                return None
            if (version := _aliases(rm).get(alias)) is None:
                recorded = rm.tags.get(ALIAS_TAG + alias)
                if recorded and self._version(name, recorded) is None:
                    raise RegistryError(f"alias {alias!r} of model {name!r} pointed at version "
                                        f"{recorded}, which was deleted; promote a version "
                                        f"(or roll back) to restore it")
                return None
            return self._fetch(name, str(version))

    def load_version(self, name: str, version: str | int) -> tuple[str, ModelArtifact] | None:
        """(version, artifact) of an explicit version; None if it does not exist."""
        with self._errors(f"loading {name!r} version {version}"):
            if self._model(name) is None or self._version(name, str(version)) is None:
                return None
            return self._fetch(name, str(version))

    def _fetch(self, name: str, version: str) -> tuple[str, ModelArtifact]:
        import mlflow

        self._version(name, version, ready=True)
        uri = self._call(self.client.get_model_version_download_uri, name, version)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self._call(mlflow.artifacts.download_artifacts,
                                   artifact_uri=f"{uri.rstrip('/')}/artifacts/{FILENAME}",
                                   dst_path=tmp, tracking_uri=self.uri)
            except RegistryError:
                raise
            except Exception as e:
                raise RegistryError(f"model {name!r} version {version}: cannot fetch "
                                    f"{FILENAME} from {uri}: {_brief(e)}") from e
            return version, ModelArtifact.load(local)

    def champion(self, name: str) -> tuple[str, ModelArtifact] | None:
        """The serving model (see ``load_alias``)."""
        return self.load_alias(name, CHAMPION)

    def promote(self, name: str, version: str | int, alias: str = CHAMPION) -> dict:
        """Point ``alias`` at ``version``; a replaced champion goes on the rollback history.

        Promoting the challenger to champion also clears the challenger alias. Validates first
        and undoes partial changes, so a failed promote changes nothing.
        """
        version = str(version)
        with self._errors(f"promoting model {name!r} version {version} to {alias}"):
            before = self._existing(name)
            self._version(name, version, ready=True)
            previous, history = _aliases(before).get(alias), self._history(before)
            result = {"name": name, "alias": alias, "version": version, "previous": previous,
                      "changed": previous != version, "history": history}
            if previous == version:
                return result
            try:
                self._set_alias(name, alias, version)
                if alias == CHAMPION and previous is not None:
                    history = result["history"] = (history + [previous])[-MAX_HISTORY:]
                    self._set_tag(name, HISTORY_TAG, history)
                if alias == CHAMPION and _aliases(before).get(CHALLENGER) == version:
                    self._call(self.client.delete_registered_model_alias, name, CHALLENGER)
                    self._call(self.client.delete_registered_model_tag, name,
                               ALIAS_TAG + CHALLENGER)
            except BaseException:
                self._restore(name, before, (alias, CHALLENGER))
                raise
        return result

    def rollback(self, name: str) -> dict:
        """Champion back to the previous champion (history tag); recorded in a tag too."""
        with self._errors(f"rolling back model {name!r}"):
            before = self._existing(name)
            if not (history := self._history(before)):
                raise RegistryError(f"model {name!r} has no previous champion to roll back to")
            target, current = history[-1], _aliases(before).get(CHAMPION)
            if self._version(name, target) is None:
                raise RegistryError(f"cannot roll back model {name!r}: previous champion "
                                    f"version {target} was deleted")
            self._version(name, target, ready=True)
            try:
                self._set_alias(name, CHAMPION, target)
                self._set_tag(name, HISTORY_TAG, history[:-1])
                self._set_tag(name, ROLLBACK_TAG, {"from": current, "to": target,
                                                   "time_ms": int(time.time() * 1000)})
            except BaseException:
                self._restore(name, before, (CHAMPION,))
                raise
        return {"name": name, "alias": CHAMPION, "version": target, "previous": current,
                "history": history[:-1]}

    def drop_alias(self, name: str, alias: str, version: str | int) -> bool:
        """Remove ``alias`` if it still points at ``version`` (a rolled-back challenger)."""
        with self._errors(f"removing alias {alias} of model {name!r}"):
            if _aliases(self._existing(name)).get(alias) != str(version):
                return False
            self._call(self.client.delete_registered_model_alias, name, alias)
            self._quietly(self.client.delete_registered_model_tag, name, ALIAS_TAG + alias)
        return True

    def tag_version(self, name: str, version: str | int, tags: dict[str, Any]) -> None:
        """Set tags on one version (non-strings as JSON): how a rollout records its outcome."""
        with self._errors(f"tagging model {name!r} version {version}"):
            self._version(name, str(version), ready=True)
            for key, value in tags.items():
                self._call(self.client.set_model_version_tag, name, str(version), key,
                           value if isinstance(value, str) else json.dumps(value))

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        """Every live version of ``name`` with its aliases, sorted by version number."""
        with self._errors(f"listing versions of model {name!r}"):
            if (rm := self._model(name)) is None:
                return []
            aliases: dict[str, list[str]] = {}
            for alias, v in _aliases(rm).items():
                aliases.setdefault(str(v), []).append(alias)
            # one page holds 10000 versions; search results may lack aliases (taken from rm)
            versions = self._call(self.client.search_model_versions, f"name = '{name}'")
        return sorted(({"version": str(mv.version), "run_id": mv.run_id,
                        "aliases": sorted(aliases.get(str(mv.version), [])),
                        "tags": dict(mv.tags), "status": mv.status,
                        "created_ms": mv.creation_timestamp} for mv in versions),
                      key=lambda d: int(d["version"]))
