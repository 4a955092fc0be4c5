"""What a failed pipeline task says, carried to the CLI's last line.

kfp's local runner turns any failed task into "Pipeline ... finished with status FAILURE.
Inner task failed: 'record' inside 'condition-2' ...": the task's own error sits in the log,
far above. Each step therefore leaves a record of the error that ended it (task, error type,
first line of the message) in the directory named by ``$MLEOPS_TASK_ERRORS`` when the driver
set one; the driver reads the first record after a failure and raises a
:class:`~mleops.pipeline.runner.PipelineError` naming the task and that message, with the
error type, so the exit code follows the cause (a ``DataError`` in a task is bad input: 2).

On a cluster there is no shared directory: a step that knows the run (its ``tracking_uri``,
``model_name`` and ``run_tag`` arguments) records the same on the pipeline's MLflow run
instead (``Registry.record_task_failure``: the run is marked FAILED with the cause), where the
CLI, told by the KFP API only that a task failed, reads it back (:func:`from_registry`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

ENV = "MLEOPS_TASK_ERRORS"
RUN_TAG = "mleops.pipeline_run"  # the tag that names a pipeline invocation's MLflow run
F = TypeVar("F", bound=Callable[..., Any])


def reports_failure(task: str) -> Callable[[F], F]:
    """Decorate a step: an exception that ends it is recorded for the driver, then re-raised."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def step(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                try:
                    bound = signature.bind_partial(*args, **kwargs).arguments
                except TypeError:
                    bound = {}
                record(task, e, run={k: str(bound.get(k) or "") for k in RUN_ARGS})
                raise
        return step  # type: ignore[return-value]
    return wrap


#: the step arguments that name the pipeline's MLflow run
RUN_ARGS = ("tracking_uri", "model_name", "run_tag")


def describe(task: str, error: BaseException) -> dict[str, Any]:
    """The record of ``error``: the task, the error's type, the first line of its message."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return {"task": task, "type": type(error).__name__, "message": lines[0][:2000],
            "at": time.time()}


def record(task: str, error: BaseException, *, run: dict[str, str] | None = None) -> None:
    """Write ``error``'s record where ``$MLEOPS_TASK_ERRORS`` says; without one (a pod on a
    cluster), on the MLflow run that ``run`` names when it names one. Never raises: the
    task's own error is what must surface."""
    doc = describe(task, error)
    where = os.environ.get(ENV)
    if not where:
        run = run or {}
        if all(run.get(k) for k in RUN_ARGS):
            with contextlib.suppress(Exception):
                from mleops.registry import Registry

                Registry(run["tracking_uri"], retries=1).record_task_failure(
                    run["model_name"], RUN_TAG, run["run_tag"], doc)
        return
    if not os.path.isdir(where):
        return
    fd, tmp = tempfile.mkstemp(dir=where, prefix=f".{task}-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, os.path.join(where, f"{time.time_ns()}-{task}.json"))


def from_registry(registry, model_name: str, run_tag: str) -> dict[str, Any] | None:
    """The record a cluster's task left on the pipeline run tagged ``run_tag``, or None."""
    try:
        return registry.task_failure(model_name, RUN_TAG, run_tag)
    except Exception:  # noqa: BLE001 - the host's own account of the failure still stands
        return None


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


__all__ = ["ENV", "RUN_TAG", "collecting", "describe", "first_failure", "from_registry", "record",
           "reports_failure"]
