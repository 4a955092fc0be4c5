"""The MLflow model registry as mleops uses it: log, register, champion/challenger, rollback.

Runs are logged by :class:`~mleops.registry.runs.Runs` (params, metrics, ``model.json`` and a
pyfunc model whose only state is that JSON; no pickle anywhere). Registered versions carry
lineage tags; aliases ``champion``/``challenger`` mark what serves and what waits. Two kinds of
registered-model tags make alias moves undoable and auditable: ``mleops.champion_history``
(JSON list of earlier champions, newest last) and ``mleops.alias.<alias>`` (the version mleops
last pointed the alias at: MLflow silently drops an alias whose version is deleted, and this
lets us say so instead of reporting "no champion"). Server calls retry on connection failures
with exponential backoff, then raise :class:`RegistryError` naming the URI; a failure after a
change undoes the change.
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import Any

from mleops.artifact import FILENAME, ModelArtifact
from mleops.registry.lock import ensure_model, json_tag, model_lock
from mleops.registry.runs import MODEL_ID_TAG, Runs
from mleops.registry.session import NotAFleet, RegistryError, brief, error_code

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG, ALIAS_TAG = "mleops.champion_history", "mleops.alias."
ROLLBACK_TAG = "mleops.last_rollback"
PENDING_TAG = "mleops.promotion_pending"  # a promotion's intent, until it is complete
MAX_HISTORY = 50
CANDIDATE_TAG = "mleops.candidate_key"  # what a version was built from (pipeline.provenance)
DUPLICATE_TAG = "mleops.duplicate_of"  # on a run whose candidate already was a version


class DuplicateVersion(RegistryError):
    """The candidate already is a version (same data, family and options): nothing added."""

    def __init__(self, name: str, version: str) -> None:
        super().__init__(f"model {name!r} version {version} was built from the same data, "
                         f"family and options: nothing registered")
        self.version = version


class ChampionMoved(RegistryError):
    """The champion is not the one the candidate was gated against: nothing registered.

    ``now`` is the current champion ("" for none); the caller re-gates against it and tries
    again (:mod:`mleops.pipeline.regate`)."""

    def __init__(self, name: str, expected: str, now: str) -> None:
        super().__init__(
            f"the champion of {name!r} changed since this candidate was gated (compared with "
            f"{expected or 'no champion'}, now {now or 'none'}): not registered")
        self.expected, self.now = expected, now


def _aliases(rm) -> dict[str, str]:
    """alias -> version as strings (sqlite stores return ints, the REST API strings)."""
    return {k: str(v) for k, v in (rm.aliases or {}).items()}


class Registry(Runs):
    """mleops' view of an MLflow tracking server / model registry at ``tracking_uri``.

    ``None`` means ``$MLFLOW_TRACKING_URI``, else an embedded ``sqlite:///<cwd>/mlruns.db``.
    Runs (logging, reading back) come from :class:`~mleops.registry.runs.Runs`; this class
    adds versions, aliases and their history.
    """

    def _model(self, name: str):
        """The registered model, or None when it does not exist."""
        try:
            return self._call(self.client.get_registered_model, name)
        except Exception as e:
            if error_code(e) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _version(self, name: str, version: str, *, ready: bool = False):
        """The model version, None if missing/deleted (RegistryError then if ``ready``)."""
        try:
            mv = self._call(self.client.get_model_version, name, str(version))
        except Exception as e:
            if error_code(e) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
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

    # --- public API ------------------------------------------------------------------------
    def register(self, name: str, run_id: str, *, tags: dict,
                 expected_champion: str | None = None) -> str:
        """New version of ``name`` from the run's model: champion if none yet, else challenger.

        ``tags`` (lineage: pipeline run, data hash, git commit ...) go on the version. If a
        step after creating the version fails, the version (and a model created for it) is
        deleted again: nothing stays half-registered. Holds the model's lock
        (:mod:`~mleops.registry.lock`), so concurrent registrations and promotions are
        serialised; with ``expected_champion`` (the version the gate compared with, "" for
        none) :class:`ChampionMoved` is raised if the champion changed since it was gated: it
        would otherwise wait as challenger without ever having been compared with the
        champion (the pipeline re-gates it against the new one and tries again).
        """
        with self._errors(f"registering run {run_id} as model {name!r}"):
            run = self._call(self.client.get_run, run_id)
            if run.info.lifecycle_stage == "deleted":
                raise RegistryError(f"run {run_id} is deleted; restore it before registering")
            if not (model_id := run.data.tags.get(MODEL_ID_TAG)):
                raise RegistryError(f"run {run_id} has no mleops model (tag {MODEL_ID_TAG}); "
                                    f"log it with log_training_run first")
            created = ensure_model(self, name)
            with model_lock(self, name):
                return self._register_locked(name, run_id, model_id, tags, created,
                                             expected_champion)

    def duplicate_of(self, name: str, candidate_key: str) -> str | None:
        """The version of ``name`` built from ``candidate_key`` (tag ``mleops.candidate_key``),
        deleted-alias and rolled-back versions included; None if there is none."""
        if not candidate_key:
            return None
        return next((v["version"] for v in self.list_versions(name)
                     if v["tags"].get(CANDIDATE_TAG) == candidate_key), None)

    def _register_locked(self, name, run_id, model_id, tags, created,
                         expected_champion) -> str:
        if dup := self.duplicate_of(name, tags.get(CANDIDATE_TAG, "")):
            raise DuplicateVersion(name, dup)  # under the lock: two equal runs add one version
        if expected_champion is not None:
            now = _aliases(self._existing(name)).get(CHAMPION) or ""
            if now != str(expected_champion):  # (a model made for it stays, empty)
                raise ChampionMoved(name, str(expected_champion), now)
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
                                    f"{FILENAME} from {uri}: {brief(e)}") from e
            return version, ModelArtifact.load(local)

    def load_fleet(self, name: str, version: str | int | None = None, *,
                   alias: str = CHAMPION):
        """(version, FleetArtifact) of a fleet version (``version``, else the ``alias``);
        None if there is none. RegistryError if that version is not a fleet."""
        from mleops.fleet_artifact import FleetArtifact

        what = f"fleet {name!r} " + (f"version {version}" if version is not None else f"@{alias}")
        with self._errors(f"loading {what}"):
            if self._model(name) is None:
                return None
            if version is None:
                if (version := _aliases(self._existing(name)).get(alias)) is None:
                    return None
            version = str(version)
            if (mv := self._version(name, version)) is None:
                return None
            self._version(name, version, ready=True)
            import mlflow

            with tempfile.TemporaryDirectory() as tmp:
                try:
                    local = self._call(mlflow.artifacts.download_artifacts,
                                       run_id=mv.run_id, artifact_path="fleet", dst_path=tmp,
                                       tracking_uri=self.uri)
                except Exception as e:
                    raise NotAFleet(f"model {name!r} version {version} has no fleet "
                                    f"table (not a fleet?): {brief(e)}") from e
                return version, FleetArtifact.load(local)

    def champion(self, name: str) -> tuple[str, ModelArtifact] | None:
        """The serving model (see ``load_alias``)."""
        return self.load_alias(name, CHAMPION)

    def promote(self, name: str, version: str | int, alias: str = CHAMPION, *,
                force: bool = False) -> dict:
        """Point ``alias`` at ``version``; a replaced champion goes on the rollback history.

        Promoting the challenger to champion also clears the challenger alias. The intent is
        written first (tag ``mleops.promotion_pending``): a promote interrupted at any point
        (MLflow down after the alias moved, the process killed) is undone if possible, and
        otherwise completed by the next promote of the same version (history and challenger
        included), or undone exactly by a promote of the previous one. A version a rollout
        rolled back is not made champion again without ``force`` (the rollout's own
        evidence, or a person who read the reason).
        """
        version = str(version)
        with self._errors(f"promoting model {name!r} version {version} to {alias}"):
            self._existing(name)
            with model_lock(self, name):
                return self._promote_locked(name, version, alias, force)

    def _promote_locked(self, name: str, version: str, alias: str, force: bool) -> dict:
        before = self._existing(name)
        mv = self._version(name, version, ready=True)
        outcome = (mv.tags or {}).get("mleops.rollout")
        if alias == CHAMPION and outcome == "rolled_back" and not force:
            raise RegistryError(
                f"model {name!r} version {version} was rolled back by a rollout "
                f"({(mv.tags or {}).get('mleops.rollout_reason', 'no reason recorded')}); "
                "promote it anyway with --force")
        aliases, history = _aliases(before), self._history(before)
        pending = json_tag(before, PENDING_TAG)
        if pending and pending.get("alias") == alias and \
                aliases.get(alias) == pending.get("version"):
            previous = pending.get("previous")  # a half-done promotion: what it replaced
        else:
            previous, pending = aliases.get(alias), None
        result = {"name": name, "alias": alias, "version": version, "previous": previous,
                  "changed": previous != version, "history": history}
        if previous == version and aliases.get(alias) == version and pending is None:
            if PENDING_TAG in before.tags:  # an earlier attempt's intent, now inert
                self._quietly(self.client.delete_registered_model_tag, name, PENDING_TAG)
            return result
        self._set_tag(name, PENDING_TAG, {"alias": alias, "version": version,
                                          "previous": previous})
        try:
            self._set_alias(name, alias, version)
            if alias == CHAMPION and previous not in (None, version) and \
                    history[-1:] != [previous]:
                history = result["history"] = (history + [previous])[-MAX_HISTORY:]
                self._set_tag(name, HISTORY_TAG, history)
            if alias == CHAMPION and aliases.get(CHALLENGER) == version:
                self._call(self.client.delete_registered_model_alias, name, CHALLENGER)
            if alias == CHAMPION and before.tags.get(ALIAS_TAG + CHALLENGER) == version:
                self._call(self.client.delete_registered_model_tag, name,
                           ALIAS_TAG + CHALLENGER)
            self._call(self.client.delete_registered_model_tag, name, PENDING_TAG)
        except BaseException:
            if pending is None:  # a fresh attempt: put things back if the server lets us
                self._restore(name, before, (alias, CHALLENGER))  # (a stale intent is inert)
            raise
        return result

    def rollback(self, name: str) -> dict:
        """Champion back to the previous champion (history tag); recorded in a tag too."""
        with self._errors(f"rolling back model {name!r}"):
            self._existing(name)
            with model_lock(self, name):
                return self._rollback_locked(name)

    def _rollback_locked(self, name: str) -> dict:
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
            self._existing(name)
            with model_lock(self, name):
                if _aliases(self._existing(name)).get(alias) != str(version):
                    return False
                self._call(self.client.delete_registered_model_alias, name, alias)
                self._quietly(self.client.delete_registered_model_tag, name, ALIAS_TAG + alias)
        return True

    def download_uri(self, name: str, version: str | int) -> str:
        """Where MLflow keeps a READY version's files (``artifacts/model.json`` lies under it)."""
        version = str(version)
        with self._errors(f"locating model {name!r} version {version}"):
            self._version(name, version, ready=True)
            return str(self._call(self.client.get_model_version_download_uri, name, version))

    def version_of_run(self, name: str, run_id: str) -> str | None:
        """The version of ``name`` registered from ``run_id``, None if none was."""
        with self._errors(f"finding the version of model {name!r} from run {run_id}"):
            if self._model(name) is None:
                return None
            found = self._call(self.client.search_model_versions, f"name = '{name}'")
        return next((str(mv.version) for mv in found if mv.run_id == run_id), None)

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
