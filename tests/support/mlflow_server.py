"""A real ``mlflow server`` for tests (sqlite backend, proxied artifacts, a free local port).

tests/conftest.py provides it: take ``mlflow_server`` (the ``http://127.0.0.1:PORT`` URI) as a
fixture argument; do not import it into a test module (that starts a second server). The
server is started once per test session (per xdist worker) and always stopped (terminate,
then kill).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

STARTUP_TIMEOUT_S = 90.0


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (uvicorn, job runner), then SIGKILL leftovers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # the group start_new_session gave it
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def start_server(workdir: str, timeout: float = STARTUP_TIMEOUT_S, *, backend: str = "",
                 artifacts: str = "", workers: int = 1,
                 env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` (default: everything under ``workdir``, sqlite; or the given
    backend store and artifact destination); (process, uri) once healthy."""
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log_path = os.path.join(workdir, "server.log")
    cmd = [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--backend-store-uri",
           backend or f"sqlite:///{os.path.join(workdir, 'mlflow.db')}",
           "--artifacts-destination", artifacts or os.path.join(workdir, "artifacts")]
    # no job runner: MLflow 3's starts 7 huey consumer processes per server (~170 MB each),
    # which ran CI out of memory; mleops uses no MLflow jobs
    env = {**os.environ, **(env or {}), "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None or _healthy(uri):
            break
        time.sleep(0.25)
    if proc.poll() is not None or not _healthy(uri):
        _stop(proc)
        with open(log_path) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"mlflow server at {uri} did not become healthy within {timeout:.0f} s "
                           f"(exit code {proc.returncode}); its output:\n{tail}")
    return proc, uri


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """URI of a running tracking server with registry and artifact proxy; stopped afterwards."""
    proc, uri = start_server(str(tmp_path_factory.mktemp("mlflow_server")))
    try:
        yield uri
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def mlflow_production(tmp_path_factory):
    """MLflow the way infra/k8s runs it: PostgreSQL backend store, S3 artifacts (a real S3 API
    on 127.0.0.1), 2 server workers. Yields (uri, control: {"restart_postgres", "env"})."""
    from support.postgres import postgres
    from support.s3 import s3_server

    with postgres() as (db, pg), s3_server("mlflow") as s3env:
        proc, uri = start_server(str(tmp_path_factory.mktemp("mlflow_pg")), backend=db,
                                 artifacts="s3://mlflow/artifacts", workers=2, env=s3env,
                                 timeout=3 * STARTUP_TIMEOUT_S)  # a loaded CI box is slow here
        try:
            yield uri, {"restart_postgres": pg["restart"], "env": s3env}
        finally:
            _stop(proc)
