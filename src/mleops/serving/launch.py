"""Start ``seldon-core-microservice`` bound to a chosen host (default 127.0.0.1).

seldon-core 1.18 hard-codes 0.0.0.0 for its REST, metrics and gRPC servers; locally that
would expose the model on every interface. This entry point (run with the server
environment's python) rewrites the bind address before handing over to Seldon's own main.
In a pod, set ``MLEOPS_BIND_HOST=0.0.0.0`` (the rendered manifests do).
"""

from __future__ import annotations

import os
import sys


def _rebind(address: str, host: str) -> str:
    return address.replace("0.0.0.0", host, 1)


def main(argv: list[str] | None = None) -> None:
    host = os.environ.get("MLEOPS_BIND_HOST", "127.0.0.1")
    from seldon_core import microservice

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
        return run_grpc(user_object, seldon_metrics, args, annotations,
                        _rebind(bind_address, host))

    microservice.StandaloneApplication = bound(microservice.StandaloneApplication)
    microservice.UserModelApplication = bound(microservice.UserModelApplication)
    microservice._run_grpc_server = bound_grpc
    sys.argv = ["seldon-core-microservice", *(sys.argv[1:] if argv is None else argv)]
    microservice.main()


if __name__ == "__main__":
    main()
