"""Local model servers: start and stop the real Seldon microservice in the serving environment.

seldon-core pins numpy<2 and protobuf<4, so the server runs in its own virtualenv:
``$MLEOPS_SERVING_PYTHON`` names its interpreter, else the nearest ``serving/.venv`` above the
working directory (a checkout's, ``make serving-venv``), else the environment
:mod:`mleops.serving.env` makes in the user cache (``mleops serving-env create``; a
:class:`LocalServer` makes it on first use).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mleops.errors import MleopsError
from mleops.serving.contract import Limits
from mleops.serving.lifetime import OWNER_ENV, SERVER_ID_ENV


class ServerError(MleopsError, RuntimeError):
    """The model server could not be started or did not become ready."""


def serving_python(create: bool = False) -> str:
    """The server environment's interpreter: ``$MLEOPS_SERVING_PYTHON``, else the first
    ``serving/.venv/bin/python`` in the working directory or one above it (a checkout), else
    the one :mod:`mleops.serving.env` made; ``create``: make that one if absent (with a line
    of progress on stderr, once, minutes), else raise ServerError naming how to make it."""
    if py := os.environ.get("MLEOPS_SERVING_PYTHON"):
        if not os.path.exists(py):
            raise ServerError(f"MLEOPS_SERVING_PYTHON={py} does not exist")
        return py
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (py := d / "serving" / ".venv" / "bin" / "python").exists():
            return str(py)
    from mleops.serving import env

    if (made := env.path()) is not None:
        return str(made)
    if create:
        return str(env.ensure(progress=lambda line: print(line, file=sys.stderr, flush=True)))
    raise ServerError(env.absent_message())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(host: str, port: int) -> None:
    """Raise ServerError if ``host:port`` is taken (a server started on it would fail to bind
    while its readiness check was answered by whatever holds the port)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # as the servers bind: a port in TIME_WAIT (just closed) is free, a listener is not
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ServerError(f"port {port} on {host} is already in use ({e.strerror}); "
                              "choose another with --port") from None


def server_command(model_dir: str, *, http_port: int, grpc_port: int, metrics_port: int,
                   max_rows: int = 10_000, workers: int = 1, tracking_uri: str = "",
                   metrics_interval: float = 0.25, create_env: bool = False) -> list[str]:
    """``model_dir`` may also be a ``models:/`` URI: the server then fetches it itself;
    ``create_env``: make the serving environment if there is none (:func:`serving_python`)."""
    where = ({"name": "model_uri", "value": model_dir, "type": "STRING"}
             if model_dir.startswith("models:/") else
             {"name": "model_dir", "value": os.path.abspath(model_dir), "type": "STRING"})
    params = [where, {"name": "max_rows", "value": str(max_rows), "type": "INT"},
              {"name": "metrics_interval", "value": str(metrics_interval), "type": "FLOAT"}]
    if tracking_uri:
        params.append({"name": "tracking_uri", "value": tracking_uri, "type": "STRING"})
    return [serving_python(create=create_env), "-m", "mleops.serving.launch", "MleopsModel",
            "--service-type", "MODEL", "--http-port", str(http_port),
            "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
            "--workers", str(workers), "--parameters", json.dumps(params)]


class _ServerProcess:
    """A server started as its own session (so stopping its group stops all of it), tied to
    this process (:mod:`mleops.serving.lifetime`), with an id its health answer must carry."""

    host: str
    http_port: int

    def _spawn(self, cmd: list[str], env: dict[str, str], log_path: str | None) -> None:
        self.server_id = secrets.token_hex(8)
        env = {**os.environ, **env, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
               OWNER_ENV: str(os.getpid()), SERVER_ID_ENV: self.server_id}
        self.log = open(log_path or os.devnull, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def _answer_id(self) -> str | None:
        """The id in the health answer (None: not ready yet)."""
        raise NotImplementedError

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"model server exited with status {self.proc.returncode}")
            try:
                answer = self._answer_id()
            except (urllib.error.URLError, OSError, ValueError, AttributeError):
                answer = None
            if answer == self.server_id:
                return
            if answer is not None:
                self.stop()
                raise ServerError(f"port {self.http_port} on {self.host} answers as another "
                                  "server (it was taken after this one was started)")
            time.sleep(0.3)
        self.stop()
        raise ServerError(f"model server not ready after {timeout:.0f} s")

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()

    def __enter__(self):
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _limits_env(limits: Limits | None, max_rows: int, max_body_bytes: int, host: str
                ) -> dict[str, str]:
    bounds = {f"MLEOPS_{k.upper()}": str(v) for k, v in
              dataclasses.asdict(limits or Limits.from_env()).items()}
    return {**bounds, "MLEOPS_MAX_ROWS": str(max_rows), "MLEOPS_BIND_HOST": host,
            "MLEOPS_MAX_BODY_BYTES": str(max_body_bytes)}


class LocalServer(_ServerProcess):
    """A running Seldon microservice; a context manager that always stops it. With no
    serving environment yet, the first one makes it (:func:`mleops.serving.env.ensure`)."""

    def __init__(self, model_dir: str, *, host: str = "127.0.0.1", http_port: int = 0,
                 max_rows: int = 10_000, max_body_bytes: int = 8 << 20,
                 tracking_uri: str = "", metrics_interval: float = 0.25, workers: int = 1,
                 threads: int = 4, log_path: str | None = None,
                 limits: Limits | None = None, metrics_port: int = 0):
        """``limits`` bound each request (rows, columns, quantile levels, JSON depth); the
        ``max_rows``/``max_body_bytes`` arguments win over theirs."""
        self.host = host
        if http_port:
            port_free(host, http_port)
        self.http_port = http_port or free_port()
        if metrics_port:  # a restarted server keeps its scrape target, as a pod keeps its IP
            port_free(host, metrics_port)
        self.grpc_port, self.metrics_port = free_port(), metrics_port or free_port()
        cmd = server_command(model_dir, http_port=self.http_port, grpc_port=self.grpc_port,
                             metrics_port=self.metrics_port, max_rows=max_rows,
                             tracking_uri=tracking_uri, metrics_interval=metrics_interval,
                             workers=workers, create_env=True)
        cmd += ["--threads", str(threads)] if threads > 1 else []
        self._spawn(cmd, _limits_env(limits, max_rows, max_body_bytes, host), log_path)

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def _answer_id(self) -> str | None:
        with urllib.request.urlopen(f"{self.url}/health/status", timeout=2) as r:
            answer = json.loads(r.read())
        return (answer.get("jsonData") or answer).get("server_id") or ""


class OipServer(_ServerProcess):
    """A running Open Inference Protocol v2 server (KServe's ModelServer, this environment)
    for a model directory: REST on ``http_port`` (metrics at ``/metrics`` there), gRPC on
    ``grpc_port``."""

    def __init__(self, model_dir: str, *, host: str = "127.0.0.1", http_port: int = 0,
                 grpc_port: int = 0, max_rows: int = 10_000, max_body_bytes: int = 8 << 20,
                 model_name: str = "", model_version: str = "", log_path: str | None = None,
                 limits: Limits | None = None, canary_dir: str = "", routing_path: str = ""):
        """``canary_dir``/``routing_path``: a fleet canary (:mod:`.fleet_canary`)."""
        self.host = host
        for port in (http_port, grpc_port):
            if port:
                port_free(host, port)
        self.http_port, self.grpc_port = http_port or free_port(), grpc_port or free_port()
        cmd = [sys.executable, "-m", "mleops.serving.oip_launch", "--model-dir",
               os.path.abspath(model_dir), "--http-port", str(self.http_port), "--grpc-port",
               str(self.grpc_port)]
        if canary_dir:
            cmd += ["--canary-model-dir", os.path.abspath(canary_dir)]
        if routing_path:
            cmd += ["--routing-file", os.path.abspath(routing_path)]
        env = _limits_env(limits, max_rows, max_body_bytes, host)
        env.update(MLEOPS_MODEL_NAME=model_name, MLEOPS_MODEL_VERSION=model_version)
        self._spawn(cmd, env, log_path)

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def _answer_id(self) -> str | None:
        from mleops.serving.oip_guard import SERVER_ID_HEADER

        with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as r:
            return r.headers.get(SERVER_ID_HEADER) or ""


__all__ = ["LocalServer", "OipServer", "ServerError", "free_port", "port_free",
           "server_command", "serving_python"]
