"""The persisted state of a rollout, and where it is kept.

Like Flagger's canary status, nothing important lives only in a controller's memory: every
tick re-reads the state, takes one step and writes it back, so a controller that is killed
and restarted resumes where it was and reaches the same decision. Locally the state is a JSON
file (atomic replace, guarded by an advisory lock so ``mleops rollout abort`` cannot race a
running controller); on a cluster it is an annotation on the SeldonDeployment
(:class:`mleops.rollout.backends.kubernetes.AnnotationStateStore`, beside the backend that patches the
same object).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mleops.atomic import write_json_atomic
from mleops.errors import DataError

PROGRESSING, WAITING = "progressing", "waiting_confirmation"
PROMOTING = "promoting"  # the registry says champion; traffic not yet confirmed at 100%
PROMOTED, ROLLED_BACK, FAILED = "promoted", "rolled_back", "failed"
PHASES = (PROGRESSING, WAITING, PROMOTING, PROMOTED, ROLLED_BACK, FAILED)
TERMINAL = (PROMOTED, ROLLED_BACK, FAILED)
# outside the manifests' ``mleops.io/`` prefix: applying a manifest must not remove it
ANNOTATION = "rollout.mleops.io/state"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class RolloutState:
    """Everything a controller needs to take the next step (JSON-serialisable)."""

    name: str
    candidate_version: str
    champion_version: str
    mode: str = "split"  # split (canary answers its share) | shadow (champion answers all)
    steps: list[int] = field(default_factory=lambda: [10, 25, 50, 100])
    step_index: int = 0
    weight: int = 0  # the canary's current share (mirrored share in shadow mode)
    phase: str = PROGRESSING
    reason: str = ""
    confirm_before_promote: bool = False
    confirmed: bool = False
    abort_requested: str = ""  # a reason, set by `mleops rollout abort`
    test: dict[str, Any] = field(default_factory=dict)  # SequentialTest.to_dict()
    test_config: dict[str, Any] = field(default_factory=dict)
    guardrails: dict[str, Any] = field(default_factory=dict)
    cursor: dict[str, Any] = field(default_factory=dict)  # backend's read position
    backend: dict[str, Any] = field(default_factory=dict)  # Backend.describe(): where it runs
    step_rows: int = 0  # canary rows observed at the current step
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    last_data_at: float = field(default_factory=time.time)
    verdict: dict[str, Any] = field(default_factory=dict)
    guardrail_stats: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    rollout_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # this rollout
    driver: dict[str, Any] = field(default_factory=dict)  # the driving controller's lease

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def event(self, what: str, **details: Any) -> None:
        """Append to the audit trail (also what the demo narrates and plots)."""
        self.history.append({"time": round(time.time(), 3), "event": what,
                             "weight": self.weight, **details})
        self.history = self.history[-500:]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RolloutState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class StateStore(Protocol):
    """Where rollout states live; ``locked`` serialises read-modify-write cycles."""

    def load(self, name: str) -> RolloutState | None: ...
    def save(self, state: RolloutState) -> None: ...
    def locked(self, name: str) -> contextlib.AbstractContextManager[None]: ...


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DataError(f"invalid rollout name {name!r}: letters, digits, '.', '_' and '-' "
                        "(at most 128)")
    return name


class FileStateStore:
    """One ``<dir>/<name>.json`` per rollout, replaced atomically; ``<name>.lock`` for flock."""

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, f"{check_name(name)}.json")

    def load(self, name: str) -> RolloutState | None:
        try:
            with open(self.path(name)) as f:
                return RolloutState.from_dict(json.load(f))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(f"rollout state {self.path(name)} is unreadable: {e}") from e

    def save(self, state: RolloutState) -> None:
        os.makedirs(self.directory, exist_ok=True)
        state.updated_at = time.time()
        write_json_atomic(self.path(state.name), state.to_dict(), indent=1)

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, f"{check_name(name)}.lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


__all__ = ["write_json_atomic", "ANNOTATION", "FileStateStore", "RolloutState", "StateStore",
           "PHASES", "TERMINAL", "PROGRESSING", "PROMOTING", "WAITING", "PROMOTED", "ROLLED_BACK", "FAILED",
           "check_name"]
