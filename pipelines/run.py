"""Drive the training pipeline with the KFP SDK: compile, run locally, submit to a KFP host.

Registered as the ``training`` entry of the ``mleops.pipelines`` entry-point group, so the
library (``mleops.pipeline.runner``) finds it without importing this shell.
"""

import contextlib
import logging
import re
import time
import warnings

from mleops.pipeline import failure
from mleops.pipeline.runner import REQUEST_TIMEOUT_ENV, Host, PipelineError
from mleops_pipelines import training


def _task_error(e: RuntimeError, rec: dict | None, pipeline_root: str) -> PipelineError:
    """The failed task's own error last (what a CI log shows), kfp's wrapper before it."""
    if rec is None:
        return PipelineError(f"pipeline task failed: {e} (outputs under {pipeline_root})")
    return PipelineError(f"{e} (outputs under {pipeline_root})\ntask '{rec['task']}' failed: "
                         f"{rec['type']}: {rec['message']}", task=rec["task"],
                         cause=rec["type"])


class TrainingDriver:
    """The :class:`mleops.pipeline.runner.PipelineDriver` of ``training_pipeline``."""

    yaml_path = training.YAML

    def compile(self, path: str | None = None) -> str:
        return training.compile_yaml(path or training.YAML)

    def run_local(self, arguments: dict, *, pipeline_root: str,
                  enable_caching: bool = True) -> None:
        """Execute the compiled components in this environment with the kfp local runner."""
        from kfp import local

        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root,
                   enable_caching=enable_caching, raise_on_error=True)
        with warnings.catch_warnings():
            # Expected here: the component image runs as this environment; display names and
            # resource requests only matter on a cluster.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            warnings.filterwarnings("ignore",
                                    message=".*have no effect in the current local runner.*")
            with failure.collecting() as errors:
                try:
                    training.training_pipeline(**arguments)
                except RuntimeError as e:
                    raise _task_error(e, failure.first_failure(errors), pipeline_root) from e

    def submit(self, host: Host, arguments: dict, *, enable_caching: bool | None = None,
               pipeline_root: str = "", client=None) -> str:
        """Submit the compiled pipeline to a KFP API server; returns the KFP run id.

        ``enable_caching`` stays None unless the user turned caching off: kfp's client would
        otherwise overwrite the per-task choices of the definition on every top-level task.
        """
        client = client or _connect(host)
        with _host_errors(host, "submitting the pipeline"):
            run = client.create_run_from_pipeline_package(
                self.yaml_path, arguments=arguments,
                run_name=f"{arguments['model_name']}-{arguments['run_tag'][:8]}",
                experiment_name=host.experiment or arguments["model_name"],
                namespace=host.namespace or None, pipeline_root=pipeline_root or None,
                enable_caching=enable_caching)
        return run.run_id

    def wait(self, host: Host, run_id: str, *, client=None) -> tuple[str, str, str]:
        """Poll the run until it ends: (state, error message, the failed task's name or "");
        ("TIMEOUT", ...) after ``host.timeout_s`` (the run itself goes on)."""
        client = client or _connect(host)
        deadline = time.monotonic() + host.timeout_s
        state = "PENDING"
        while True:
            with _host_errors(host, f"reading run {run_id}"):
                run = client.get_run(run_id)
            state = str(run.state or "PENDING")
            if state in TERMINAL:
                task, task_error = failed_task(run)
                return state, _message(getattr(run, "error", None)) or task_error, task
            if time.monotonic() + host.poll_s > deadline:
                return "TIMEOUT", (f"still {state} after {host.timeout_s:g} s (the run goes "
                                   f"on; raise --timeout or check it on the host)"), ""
            time.sleep(host.poll_s)


def _message(status) -> str:
    return (getattr(status, "message", "") or "") if status else ""


def failed_task(run) -> tuple[str, str]:
    """(display name, error message) of the task that failed first in a v2beta1 run's
    ``run_details``: a leaf task (no child tasks, not a driver or a DAG) in state FAILED."""
    details = getattr(getattr(run, "run_details", None), "task_details", None) or []
    leaves = [t for t in details if str(t.state or "") == "FAILED" and not t.child_tasks
              and not str(t.display_name or "").endswith("-driver")]
    if not leaves:
        return "", ""
    first = min(leaves, key=lambda t: (t.end_time is None, t.end_time or 0))
    return str(first.display_name or ""), _message(first.error)


#: states a v2beta1 run does not leave
TERMINAL = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")


def _connect(host: Host):
    import kfp

    _preflight(host)
    with _host_errors(host, "connecting"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # "only works with v2..."
        return _bounded(kfp.Client(host=host.url, namespace=host.namespace or "kubeflow",
                                   existing_token=host.token or None), host.request_timeout_s)


def _bounded(client, timeout_s: float):
    """Every later call of ``client`` with a socket timeout (connect, read). kfp's methods
    pass none, and urllib3 then waits forever on a host that took the connection but never
    answers (a wedged API server, a proxy holding the request): a CI job hung until its
    runner killed it. All of kfp's APIs share one ``ApiClient``, hence one REST client."""
    rest = client._run_api.api_client.rest_client
    request = rest.request

    def with_timeout(*args, _request_timeout=None, **kwargs):
        return request(*args, _request_timeout=_request_timeout or (timeout_s, timeout_s),
                       **kwargs)

    rest.request = with_timeout
    return client


def _preflight(host: Host, timeout_s: float = 10.0) -> None:
    """One bounded call to the API's healthz first: kfp's client retries an unreachable or
    refusing host for half a minute, printing tracebacks, before it says anything."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(host.url.rstrip("/") + "/apis/v2beta1/healthz")
    if host.token:
        req.add_header("Authorization", f"Bearer {host.token}")
    with _host_errors(host, "connecting"):
        try:
            urllib.request.urlopen(req, timeout=timeout_s).close()
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise  # HTTPError.status: the one-line "not authorised"
        except urllib.error.URLError as e:
            raise OSError(str(e.reason)) from None


@contextlib.contextmanager
def _host_errors(host: Host, what: str):
    """Whatever the KFP client raises becomes one line naming the host: never a traceback,
    nor the tracebacks kfp logs itself while retrying (so logging is muted meanwhile)."""
    muted = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    except PipelineError:
        raise
    except Exception as e:
        status = getattr(e, "status", None)
        if status in (401, 403):
            why = (f"HTTP {status}: not authorised (give a bearer token: $KFP_TOKEN or "
                   f"--token-file)")
        elif status:
            why = f"HTTP {status} {getattr(e, 'reason', '')}".strip() + _body(e)
        elif errno := re.search(r"\[Errno -?\d+\] [^'\")]+", str(e)):
            why = f"cannot connect: {errno.group(0)}"
        elif "timed out" in str(e).lower():
            why = (f"no answer within {host.request_timeout_s:g} s (read timed out; "
                   f"${REQUEST_TIMEOUT_ENV} sets the limit)")
        else:
            why = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
        raise PipelineError(f"KFP host {host.url}: {what} failed: {why}") from None
    finally:
        logging.disable(muted)


def _body(e: Exception) -> str:
    import json

    try:
        msg = json.loads(getattr(e, "body", "") or "{}").get("message", "")
    except (ValueError, AttributeError):
        msg = ""
    return f": {msg[:300]}" if msg else ""


DRIVER = TrainingDriver()
