"""MLflow plumbing for the registry: one client, our settings per call, retries, error reading.

Policy (versions, aliases, history) lives in :mod:`mleops.registry.registry`; this module only
knows how to talk to a tracking server that may be slow, down, or saying no.
"""

from __future__ import annotations

import contextlib
import os
import time

from mleops.errors import MleopsError

_UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish",
                "timeout exception", "Read timed out", "Connection aborted", "Connection reset")


class RegistryError(MleopsError, RuntimeError):
    """The registry cannot do what was asked; the message names the model, version or URI."""


class NotAFleet(RegistryError):
    """The version asked for as a fleet holds a single model (no fleet table)."""


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it wraps) means the server could not be reached."""
    import requests

    kinds = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
             TimeoutError)
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        if isinstance(e, kinds) or any(h in str(e) for h in _UNREACHABLE):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


def brief(exc: BaseException, limit: int = 300) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


class Session:
    """An MLflow client at ``uri`` whose calls retry while the server is unreachable.

    MLflow's own HTTP retries are switched off during our calls (we retry ``retries`` times,
    sleeping ``backoff``, 2*``backoff``, ...); ``timeout`` is the per-request limit in seconds.
    """

    def __init__(self, uri: str, *, retries: int = 4, backoff: float = 0.5,
                 timeout: int = 30) -> None:
        import mlflow

        if retries < 1:
            raise ValueError("retries must be at least 1")
        self.uri = uri
        self.retries, self.backoff, self.timeout = int(retries), float(backoff), int(timeout)
        self.client = mlflow.MlflowClient(uri, registry_uri=uri)

    @contextlib.contextmanager
    def env(self):
        """Our settings for the duration of our calls only: MLflow reads them per request.

        The global tracking URI is ours too: MLflow's sqlite registry resolves ``models:/``
        sources through it (not through the client's URI), and ``log_model`` logs to it.
        Restored by hand: ``mlflow.set_tracking_uri`` also writes $MLFLOW_TRACKING_URI, which is
        put back afterwards as it was.
        """
        import mlflow

        new = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.timeout),
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # keep stdout for our output
        old = {k: os.environ.get(k) for k in (*new, "MLFLOW_TRACKING_URI")}
        old_uri = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
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

    def call(self, fn, *args, **kwargs):
        """One server call, retried with exponential backoff while the server is unreachable."""
        delay, last = self.backoff, None
        for attempt in range(1, self.retries + 1):
            try:
                with self.env():
                    return fn(*args, **kwargs)
            except Exception as e:
                if not unreachable(e):
                    raise
                last = e
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
        raise RegistryError(f"tracking server at {self.uri} unreachable after {self.retries} "
                            f"attempts: {brief(last)}") from last

    @contextlib.contextmanager
    def errors(self, what: str):
        """Report MLflow failures as RegistryError saying what was being done."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except RegistryError:
            raise
        except Exception as e:
            if unreachable(e):
                raise RegistryError(f"tracking server at {self.uri} unreachable while {what}: "
                                    f"{brief(e)}") from e
            if isinstance(e, MlflowException):
                raise RegistryError(f"{what} failed: {brief(e)}") from e
            raise

    def quietly(self, fn, *args) -> None:
        """Best-effort cleanup step: one attempt, failures ignored (the original error wins)."""
        with contextlib.suppress(Exception), self.env():
            fn(*args)


__all__ = ["RegistryError", "Session", "brief", "error_code", "unreachable"]
