"""What a failed pipeline task says, carried to the CLI's last line.

kfp's local runner turns any failed task into "Pipeline ... finished with status FAILURE.
Inner task failed: 'record' inside 'condition-2' ...": the task's own error sits in the log,
far above. Each step therefore leaves a record of the error that ended it (task, error type,
first line of the message) in the directory named by ``$MLEOPS_TASK_ERRORS`` when the driver
set one; the driver reads the first record after a failure and raises a
:class:`~mleops.pipeline.runner.PipelineError` naming the task and that message, with the
error type, so the exit code follows the cause (a ``DataError`` in a task is bad input: 2).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

ENV = "MLEOPS_TASK_ERRORS"
F = TypeVar("F", bound=Callable[..., Any])


def reports_failure(task: str) -> Callable[[F], F]:
    """Decorate a step: an exception that ends it is recorded for the driver, then re-raised."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def step(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                record(task, e)
                raise
        return step  # type: ignore[return-value]
    return wrap


def record(task: str, error: BaseException) -> None:
    """Write ``error``'s record where ``$MLEOPS_TASK_ERRORS`` says; nothing when it is unset."""
    where = os.environ.get(ENV)
    if not where or not os.path.isdir(where):
        return
    lines = str(error).strip().splitlines() or [type(error).__name__]
    doc = {"task": task, "type": type(error).__name__, "message": lines[0][:2000],
           "at": time.time()}
    fd, tmp = tempfile.mkstemp(dir=where, prefix=f".{task}-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, os.path.join(where, f"{time.time_ns()}-{task}.json"))


def first_failure(where: str) -> dict[str, Any] | None:
    """The earliest record in ``where`` (the task that failed first), or None."""
    try:
        names = sorted(n for n in os.listdir(where) if n.endswith(".json")
                       and not n.startswith("."))
    except OSError:
        return None
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(where, name)) as f:
                doc = json.load(f)
            if isinstance(doc, dict) and {"task", "type", "message"} <= set(doc):
                return doc
    return None


@contextlib.contextmanager
def collecting() -> Iterator[str]:
    """A fresh directory for this run's records, named in ``$MLEOPS_TASK_ERRORS`` (which the
    local runner's task processes inherit) while the run lasts."""
    before = os.environ.get(ENV)
    with tempfile.TemporaryDirectory(prefix="mleops-task-errors-") as where:
        os.environ[ENV] = where
        try:
            yield where
        finally:
            if before is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = before


__all__ = ["ENV", "collecting", "first_failure", "record", "reports_failure"]
