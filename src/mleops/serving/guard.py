"""What the Seldon REST app does before and around the model: the request contract at the door.

seldon-core's Flask app answers 500 for anything its own parsing trips over, accepts
form-encoded bodies (a cross-site form post from any page a local browser opens), GET on
``/predict``, and routes (feedback, routing, aggregation) this model does not implement. The
guard runs first on every request and refuses, with a 4xx JSON body in Seldon's status format
naming the problem: a method other than POST on a prediction path; a non-JSON Content-Type;
a foreign Host header while bound to loopback (DNS rebinding); a body shorter than its
Content-Length; and anything :mod:`mleops.serving.contract` refuses. Only valid requests reach
Seldon and the model. Also here: seldon-core's metrics store made exact under threads, and a
read timeout on the gunicorn connections so slow clients cannot hold every thread.
"""

from __future__ import annotations

import os
import threading

from mleops.serving.contract import (
    ContractError,
    Limits,
    check_content_type,
    parse_body,
    seldon_request,
)

PREDICT_PATHS = ("/predict", "/api/v1.0/predictions", "/api/v0.1/predictions")
OPEN_PATHS = ("/health/ping", "/health/status", "/api/v1.0/health/status", "/metadata",
              "/api/v1.0/metadata", "/seldon.json")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
READ_TIMEOUT_S = float(os.environ.get("MLEOPS_READ_TIMEOUT_S", "10"))


def status_body(status: int, message: str, reason: str = "MLEOPS_BAD_REQUEST") -> dict:
    """Seldon's error format (what its clients parse), with the HTTP status as ``code``."""
    return {"status": {"status": 1, "code": status, "reason": reason, "info": message}}


def host_allowed(header: str | None, bound: str) -> bool:
    """A loopback-bound server answers only to loopback names; one bound to an address
    (a pod) answers any Host (its Service, its pod IP, an ingress name)."""
    if bound not in LOOPBACK:
        return True
    name = (header or "").strip()
    name = name[1:].split("]", 1)[0] if name.startswith("[") else name.rsplit(":", 1)[0]
    return name in LOOPBACK


def check_request(method: str, path: str, headers, body: bytes | None, limits: Limits,
                  bound: str) -> None:
    """Raise ContractError for a request the model server must not pass on."""
    if not host_allowed(headers.get("Host"), bound):
        raise ContractError(f"Host header {headers.get('Host')!r} refused: this server is "
                            "bound to loopback", 403)
    if path in OPEN_PATHS:
        if method not in ("GET", "HEAD"):
            raise ContractError(f"{path} takes GET, not {method}", 405)
        return
    if path not in PREDICT_PATHS:
        raise ContractError(f"no route {path}: this model server answers "
                            f"{PREDICT_PATHS[1]} (POST) and health/metadata (GET)", 404)
    if method != "POST":
        raise ContractError(f"{path} takes POST with a JSON body, not {method}", 405)
    check_content_type(headers.get("Content-Type"))
    declared = headers.get("Content-Length")
    if declared is None:
        raise ContractError("Content-Length header missing (chunked bodies are not taken)", 411)
    if body is None or len(body) != int(declared):
        raise ContractError(f"body is {0 if body is None else len(body)} bytes, shorter than "
                            f"its Content-Length {declared}")
    seldon_request(parse_body(body, limits), limits)


def install(app, limits: Limits, bound: str) -> None:
    """Attach the guard to seldon-core's Flask app (before Seldon's own handlers run)."""
    from flask import jsonify, request
    from werkzeug.exceptions import ClientDisconnected, HTTPException

    app.config["MAX_CONTENT_LENGTH"] = limits.max_body_bytes

    @app.before_request
    def guard():
        try:
            body = None
            if request.path in PREDICT_PATHS and request.method == "POST":
                n = request.content_length
                if n is not None and n > limits.max_body_bytes:
                    raise ContractError(f"request body of {n} bytes exceeds the limit of "
                                        f"{limits.max_body_bytes}", 413)
                try:
                    body = request.get_data(cache=True)
                except (OSError, ClientDisconnected) as e:  # the read timed out mid-body
                    # (Werkzeug >= 2.3 raises ClientDisconnected from the socket's error)
                    if isinstance(e, ClientDisconnected) and \
                            not isinstance(e.__context__, OSError):
                        raise
                    raise ContractError(f"request body not received within "
                                        f"{READ_TIMEOUT_S:g} s", 408) from None
            check_request(request.method, request.path, request.headers, body, limits, bound)
        except ContractError as e:
            return jsonify(status_body(e.status, str(e))), e.status
        return None

    @app.errorhandler(HTTPException)  # more specific than Seldon's catch-all 500
    def http_error(e):
        reason = "MLEOPS_PAYLOAD_TOO_LARGE" if e.code == 413 else "MLEOPS_BAD_REQUEST"
        return jsonify(status_body(e.code, e.description or e.name, reason)), e.code


def lock_metrics_store() -> None:
    """seldon-core's ``SeldonMetrics.update`` reads this worker's metrics from the shared
    store, adds to them and writes them back with no lock across the three steps: two threads
    of one worker lose each other's increments (measured: 16-21k of 40k rows counted at 4
    threads). Each worker writes only its own key, so a lock per process makes it exact."""
    from seldon_core import metrics

    if getattr(metrics.SeldonMetrics.update, "_mleops_locked", False):
        return
    update = metrics.SeldonMetrics.update
    locks: dict[int, threading.Lock] = {}

    def locked(self, custom_metrics, method):
        lock = locks.setdefault(os.getpid(), threading.Lock())  # a fork gets its own
        with lock:
            return update(self, custom_metrics, method)

    locked._mleops_locked = True
    metrics.SeldonMetrics.update = locked


def time_out_slow_reads(seconds: float = READ_TIMEOUT_S) -> None:
    """gunicorn's threaded worker reads a request with a blocking socket and no timeout: six
    clients that send their body slowly held every thread. A read timeout frees the thread."""
    from gunicorn.workers import gthread

    init = gthread.TConn.init
    if getattr(init, "_mleops_timeout", False):
        return

    def timed_init(self):
        init(self)
        self.sock.settimeout(seconds)

    timed_init._mleops_timeout = True
    gthread.TConn.init = timed_init


def grpc_status(http_status: int):
    """The gRPC code of a refusal's HTTP status (as KServe's v2 server maps them)."""
    import grpc

    return {404: grpc.StatusCode.NOT_FOUND, 503: grpc.StatusCode.UNAVAILABLE}.get(
        http_status, grpc.StatusCode.INVALID_ARGUMENT if 400 <= http_status < 500 else
        grpc.StatusCode.INTERNAL)


def answer_grpc_refusals() -> None:
    """Seldon's gRPC servicer lets a refusal (SeldonMicroserviceException) escape, which grpc
    answers UNKNOWN "Exception calling application: " (found by seldon-core's own
    SeldonClient): answer it with its code (INVALID_ARGUMENT for a 4xx) and its message."""
    from seldon_core import wrapper
    from seldon_core.flask_utils import SeldonMicroserviceException

    predict = wrapper.SeldonModelGRPC.Predict

    def refusing(self, request_grpc, context):
        try:
            return predict(self, request_grpc, context)
        except SeldonMicroserviceException as e:
            context.abort(grpc_status(e.status_code), str(e.message))

    wrapper.SeldonModelGRPC.Predict = refusing


__all__ = ["answer_grpc_refusals", "check_request", "grpc_status", "host_allowed", "install",
           "lock_metrics_store", "status_body", "time_out_slow_reads"]
