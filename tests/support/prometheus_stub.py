"""A Prometheus-speaking HTTP server on 127.0.0.1 for contract tests: answers instant queries
from a table and records each query (exact PromQL is the contract with a real Prometheus)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mleops.rollout.backends.prometheus import EXECUTOR, SERIES


class Prometheus:
    """Answers instant queries from ``values`` (promql -> {pod: value}; missing: empty
    vector); records each query; ``down`` answers HTTP 503. ``sel`` is the mleops series'
    selector with ``{v}`` for the version; ``can`` the canary's executor selector."""

    def __init__(self, sel: str, can: str = ""):
        self.sel, self.can = sel, can
        self.values, self.queries, self.down = {}, [], False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                promql = q["query"][0]
                outer.queries.append(promql)
                if outer.down:
                    self.send_error(503, "Service Unavailable")
                    return
                v = outer.values.get(promql, {})
                result = [{"metric": {"pod": pod}, "value": [1.0, str(x)]}
                          for pod, x in (v.items() if isinstance(v, dict) else [("", v)])]
                body = json.dumps({"status": "success", "data": {"resultType": "vector",
                                                                 "result": result}}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def series_queries(self, version: str) -> list[str]:
        """The queries of one version's mleops series, in ``SERIES`` order."""
        sel = self.sel.format(v=version)
        return [f"{metric}{{{sel}}}" for metric in SERIES]

    def totals(self, version: str, pods: dict) -> None:
        """pods: {pod: (rows, sum, sum of squares, outside[, failed requests])}"""
        for i, promql in enumerate(self.series_queries(version)):
            self.values[promql] = {pod: t[i] if i < len(t) else 0 for pod, t in pods.items()}

    def executor(self, requests, errors) -> None:
        """The canary's Seldon executor counts (``can``)."""
        self.values[f"{EXECUTOR}_count{{{self.can}}}"] = {"c-0": requests}
        self.values[f'{EXECUTOR}_count{{{self.can},code=~"5.."}}'] = {"c-0": errors}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
