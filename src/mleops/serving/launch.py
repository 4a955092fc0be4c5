"""Start ``seldon-core-microservice`` bound to a chosen host (default 127.0.0.1).

seldon-core 1.18 hard-codes 0.0.0.0 for its REST, metrics and gRPC servers; locally that
would expose the model on every interface. This entry point (run with the server
environment's python) rewrites the bind address before handing over to Seldon's own main.
In a pod, set ``MLEOPS_BIND_HOST=0.0.0.0`` (the rendered manifests do). Request bodies above
``MLEOPS_MAX_BODY_BYTES`` (default 8 MiB) are refused with 413 before they are parsed.
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

    from seldon_core import wrapper

    make_app = wrapper.get_rest_microservice
    max_body = int(os.environ.get("MLEOPS_MAX_BODY_BYTES", str(8 << 20)))

    def limited_app(user_model, seldon_metrics):
        # Oversize bodies get 413 from Flask before any JSON parsing (row limits are checked
        # after parsing, by the model).
        from flask import jsonify
        from werkzeug.exceptions import RequestEntityTooLarge

        app = make_app(user_model, seldon_metrics)
        app.config["MAX_CONTENT_LENGTH"] = max_body

        @app.errorhandler(RequestEntityTooLarge)  # more specific than Seldon's catch-all 500
        def too_large(_):
            body = {"status": {"status": 1, "code": -1, "reason": "MLEOPS_PAYLOAD_TOO_LARGE",
                               "info": f"request body over {max_body} bytes"}}
            return jsonify(body), 413

        return app

    wrapper.get_rest_microservice = limited_app
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
