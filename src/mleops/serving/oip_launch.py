"""Start KServe's ModelServer for one model directory: OIP v2 over REST and gRPC, guarded.

``python -m mleops.serving.oip_launch --model-dir DIR [--http-port 8080] [--grpc-port 8081]``
is the container command of the KServe predictor and what ``mleops serve --protocol v2``
runs. KServe binds 0.0.0.0 / [::] unconditionally; here both servers bind
``$MLEOPS_BIND_HOST`` (default 127.0.0.1; the rendered InferenceService sets 0.0.0.0). The
REST app gets :class:`~mleops.serving.oip_guard.Guard` in front, OIP error JSON for every
refusal, and the likelihood totals on its ``/metrics`` (what KServe's scrape annotations
point at); gRPC messages are bounded by ``MLEOPS_MAX_BODY_BYTES``. One worker process: the
totals live in it, so the metrics are exact. The name and version come from
``$MLEOPS_MODEL_NAME`` / ``$MLEOPS_MODEL_VERSION``, else ``serving.json`` in the directory.
A directory holding a fleet (``fleet.json`` + ``fleet.parquet``) is served the same way, as
one model whose requests carry a BYTES key tensor per key column (see :mod:`.oip`).
"""

from __future__ import annotations

import argparse
import os
import sys


def _grpc_address(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str) -> None:
    """Make KServe's REST and gRPC servers listen on ``host`` instead of every interface."""
    from kserve import model_server
    from kserve.protocol.grpc import server as grpc_server

    class BoundREST(model_server.RESTServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.config.host = host

    model_server.RESTServer = BoundREST
    real = grpc_server.aio

    class BoundAio:  # grpc.aio, whose servers listen where they are told
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def server(*args, **kwargs):
            srv = real.server(*args, **kwargs)
            add = srv.add_insecure_port
            srv.add_insecure_port = lambda address: add(
                _grpc_address(host, address.rsplit(":", 1)[1]))
            return srv

    grpc_server.aio = BoundAio()


def _error_handlers(app) -> None:
    """OIP error JSON with the refusal's own status (KServe would say 400 or 500)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from mleops.serving.oip import OipError

    async def refused(_, exc: OipError):
        return JSONResponse(status_code=exc.status, content={"error": str(exc.reason)})

    async def malformed(_, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(status_code=400, content={
            "error": f"not an OIP inference request: {where or 'body'}: "
                     f"{first.get('msg', 'invalid')}"})

    app.add_exception_handler(OipError, refused)
    app.add_exception_handler(RequestValidationError, malformed)


def conformant_answers() -> None:
    """Answers the OIP spec's schemas accept. KServe's say ``parameters: null`` (the spec: an
    object, or absent) in every inference response and ``versions: null`` (REST; none over
    gRPC) in model metadata, and advertise ``model_repository_extension``, whose routes the
    guard refuses: leave out what is null, answer each model's version and no extensions."""
    import functools

    from fastapi.responses import JSONResponse
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.servicer import InferenceServicer
    from kserve.protocol.rest.v2_datamodels import InferenceResponse
    from kserve.protocol.rest.v2_endpoints import V2Endpoints

    server_metadata, model_metadata = DataPlane.metadata, DataPlane.model_metadata
    rest_infer = V2Endpoints.infer

    def metadata(self) -> dict:
        return {**server_metadata(self), "extensions": []}

    async def versioned(self, model_name: str) -> dict:
        meta = await model_metadata(self, model_name)
        version = getattr(self.get_model_from_registry(model_name), "version", "")
        return {**meta, "versions": [version] if version else []}

    async def grpc_metadata(self, request, context):
        meta = await self._data_plane.model_metadata(model_name=request.name)
        return pb.ModelMetadataResponse(**{k: meta[k] for k in (
            "name", "versions", "platform", "inputs", "outputs")})

    @functools.wraps(rest_infer)  # FastAPI reads the signature for its parameters
    async def infer(self, *args, **kwargs):
        res = await rest_infer(self, *args, **kwargs)
        if isinstance(res, InferenceResponse):
            return JSONResponse(res.model_dump(mode="json", exclude_none=True))
        return res

    DataPlane.metadata, DataPlane.model_metadata = metadata, versioned
    InferenceServicer.ModelMetadata = grpc_metadata
    V2Endpoints.infer = infer


def evidence_route(app, service) -> None:
    """``GET /v2/models/{name}/evidence``: a fleet canary's per-key counters
    (:class:`~mleops.serving.fleet_tally.KeyTally`), what a fleet rollout's controller or
    judge reads each tick (aggregates only, like ``/metrics``; the guard checks the name)."""
    from fastapi.responses import JSONResponse

    async def evidence(model_name: str) -> JSONResponse:
        return JSONResponse(service.tally.snapshot())

    app.add_api_route("/v2/models/{model_name}/evidence", evidence, methods=["GET"])


def quiet_request_logs() -> None:
    """KServe logs two trace lines and an access line per request at INFO: at hundreds of
    requests a second that is most of the server's time. Errors are still logged;
    ``MLEOPS_REQUEST_LOGS=1`` keeps them all."""
    import logging

    if os.environ.get("MLEOPS_REQUEST_LOGS") != "1":
        for name in ("kserve.trace", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="mleops.serving.oip_launch")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--grpc-port", type=int, default=8081)
    ap.add_argument("--canary-model-dir", default="",
                    help="A fleet canary: the candidate's table, served beside the fleet's.")
    ap.add_argument("--routing-file", default="",
                    help="The canary's routing JSON (default: routing.json in its directory).")
    a = ap.parse_args(argv)
    sys.argv = sys.argv[:1]  # kserve parses sys.argv at import: give it nothing of ours

    from mleops.serving import lifetime

    lifetime.watch_owner()
    host = os.environ.get("MLEOPS_BIND_HOST", "127.0.0.1")
    from kserve import ModelServer, model_server
    from prometheus_client import REGISTRY

    from mleops.serving.contract import Limits
    from mleops.serving.oip import LikelihoodModel, TotalsCollector
    from mleops.serving.oip_guard import Guard
    from mleops.serving.service import LikelihoodService

    limits = Limits.from_env()
    service = LikelihoodService(a.model_dir, limits=limits,
                                model_name=os.environ.get("MLEOPS_MODEL_NAME", ""),
                                model_version=os.environ.get("MLEOPS_MODEL_VERSION", ""),
                                canary_dir=a.canary_model_dir, routing_path=a.routing_file)
    service.load()
    model = LikelihoodModel(service)
    REGISTRY.register(TotalsCollector(service))
    bind(host)
    model_server.args.grpc_max_receive_message_length = limits.max_body_bytes
    model_server.app.add_middleware(
        Guard, models={model.name: model.version}, limits=limits, bound=host,
        server_id=os.environ.get(lifetime.SERVER_ID_ENV, ""))
    _error_handlers(model_server.app)
    if service.tally is not None:
        evidence_route(model_server.app, service)
    conformant_answers()
    server = ModelServer(http_port=a.http_port, grpc_port=a.grpc_port, workers=1,
                         enable_docs_url=False, enable_latency_logging=False)
    quiet_request_logs()  # after ModelServer, which configures KServe's logging
    import gc

    gc.collect()
    gc.freeze()  # as the Seldon server: keeps full collections off the loaded kernels
    server.start([model])


if __name__ == "__main__":
    main()
