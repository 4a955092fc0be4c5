"""Start ``seldon-core-microservice`` bound to a chosen host (default 127.0.0.1), guarded.

seldon-core 1.17 hard-codes 0.0.0.0 for its REST, metrics and gRPC servers; locally that
would expose the model on every interface. This entry point (run with the server
environment's python) rewrites the bind address before handing over to Seldon's own main.
In a pod, set ``MLEOPS_BIND_HOST=0.0.0.0`` (the rendered manifests do). It also puts the
request contract in front of Seldon's REST app (:mod:`mleops.serving.guard`; bounds from
``MLEOPS_MAX_*``, e.g. ``MLEOPS_MAX_BODY_BYTES``, default 8 MiB), makes Seldon's metrics store
exact under threads, times out slow reads, answers gRPC refusals with their code and message,
and ties every server process to its owner (:mod:`mleops.serving.lifetime`).
"""

from __future__ import annotations

import os
import sys


def _rebind(address: str, host: str) -> str:
    return address.replace("0.0.0.0", host, 1)


def main(argv: list[str] | None = None) -> None:
    host = os.environ.get("MLEOPS_BIND_HOST", "127.0.0.1")
    from mleops.serving import guard, lifetime
    from mleops.serving.contract import Limits

    lifetime.watch_owner()
    from seldon_core import microservice, wrapper

    guard.lock_metrics_store()
    guard.time_out_slow_reads()
    guard.answer_grpc_refusals()
    limits = Limits.from_env()

    def bound(base):  # gunicorn applications: REST (UserModelApplication) and metrics
        class Bound(base):
            def __init__(self, app, *args, options=None, **kwargs):
                options = dict(options or {})
                if "bind" in options:
                    options["bind"] = _rebind(options["bind"], host)
                super().__init__(app, *args, options=options, **kwargs)

        Bound.__name__ = base.__name__
        return Bound

    run_grpc = microservice._run_grpc_server

    def bound_grpc(user_object, seldon_metrics, args, annotations, bind_address):
        user_object.seldon_metrics = seldon_metrics
        return run_grpc(user_object, seldon_metrics, args, annotations,
                        _rebind(bind_address, host))

    make_app = wrapper.get_rest_microservice

    def guarded_app(user_model, seldon_metrics):
        app = make_app(user_model, seldon_metrics)
        user_model.seldon_metrics = seldon_metrics  # the model flushes its own metrics
        guard.install(app, limits, host)
        return app

    wrapper.get_rest_microservice = guarded_app
    microservice.StandaloneApplication = bound(microservice.StandaloneApplication)
    microservice.UserModelApplication = bound(microservice.UserModelApplication)
    microservice._run_grpc_server = bound_grpc
    # Seldon imports the user class by module name; point that name at our adapter so the
    # server needs no shim file on its path.
    from mleops.serving import seldon

    sys.modules.setdefault("MleopsModel", seldon)
    sys.argv = ["seldon-core-microservice", *(sys.argv[1:] if argv is None else argv)]
    microservice.main()


if __name__ == "__main__":
    main()
