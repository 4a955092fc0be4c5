"""Every exit code of ``mleops``, in one table (CI scripts branch on these).

| code | meaning |
|---|---|
| 0 | done: fitted, registered, promoted (or waiting for confirmation), no drift |
| 1 | failed: a server unreachable, a task failed, a rollout refused or still running |
| 2 | bad input: the message names it; nothing was changed |
| 3 | the decision was no: fit did not converge, gate rejected, rollout rolled back |
| 4 | drift detected (``mleops monitor``) |
| 5 | nothing new: the candidate already is a registered version (``mleops pipeline run``) |
| 6 | the champion kept moving while the candidate was re-gated: not registered, re-run |
"""

from __future__ import annotations

OK, FAILED, BAD_INPUT, REJECTED, DRIFT, DUPLICATE, MOVED = 0, 1, 2, 3, 4, 5, 6
FIT_FAILED = ROLLED_BACK = REJECTED


def for_error(exc: BaseException) -> int:
    """The code for an mleops error that reached the command line."""
    from mleops.errors import DataError, FitError
    from mleops.pipeline.regate import ChampionKeptMoving

    if isinstance(exc, DataError):
        return BAD_INPUT
    if isinstance(exc, FitError):
        return FIT_FAILED
    if isinstance(exc, ChampionKeptMoving):
        return MOVED
    # a pipeline task's own error, by type name (the task ran in another process)
    return {"DataError": BAD_INPUT, "FitError": FIT_FAILED,
            "ChampionKeptMoving": MOVED}.get(getattr(exc, "cause", ""), FAILED)


def for_pipeline(result: dict) -> int:
    """``mleops pipeline run``: submitted or registered -> 0, gate rejected -> 3, the
    candidate already a version -> 5."""
    if result.get("submitted") or result.get("registered_version"):
        return OK
    return DUPLICATE if result.get("duplicate_of") else REJECTED


def for_rollout(phase: str) -> int:
    """``mleops rollout start/resume``: promoted or waiting -> 0, rolled back -> 3, else 1."""
    from mleops import rollout

    return {rollout.PROMOTED: OK, rollout.WAITING: OK,
            rollout.ROLLED_BACK: ROLLED_BACK}.get(phase, FAILED)


def for_drift(alarm: bool) -> int:
    return DRIFT if alarm else OK
