"""The judge's HTTP face, for Argo Rollouts' ``web`` metric and Flagger's webhooks.

* ``GET /v1/judge/{model}?canary=V&champion=W`` -> 200 and the decision as JSON
  (``decision``: continue / promote / rollback, the e-values, rows, reason). An Argo
  ``AnalysisTemplate`` reads ``{$.decision}``.
* ``POST /v1/flagger/rollback`` and ``POST /v1/flagger/confirm-promotion`` take Flagger's
  webhook payload (model, canary and champion in its ``metadata``). Flagger counts any status
  up to 202 as "yes", so: 200 when the judge says roll back (resp. promote), 409 otherwise;
  a payload it cannot use is a 4xx, which Flagger reads as "no" (neither rolls back nor
  promotes on a broken hook).
* ``GET /v1/judge/fleet/{model}?canary=V&champion=W`` (with ``--fleet-evidence``): a fleet's
  verdict for the service as a whole, with its per-key counts (:mod:`.fleet`).
* ``GET /metrics`` (``mleops_judge_log_e``) and ``GET /healthz``.

Every answer is a JSON verdict, errors included: ``{"decision": "error", "error": ...}`` (one
line; the server stays up), so an Argo ``web`` metric that extracts ``{$.decision}`` never
reads an empty or non-JSON body, which it would pass whatever its condition says
(argo-rollouts#4535); the shipped templates fail on any decision but continue / promote.
The HTTP guards are :mod:`mleops.serving.httpd`'s: a loopback Host header while bound to
loopback, a read timeout per connection, bounded connections and exact, bounded bodies.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from typing import Any

from mleops.errors import DataError, MleopsError
from mleops.rollout.judge.core import Judge, JudgeFull
from mleops.rollout.judge.fleet import FleetJudge
from mleops.serving.contract import ContractError, check_content_type
from mleops.serving.httpd import BoundedServer, JsonHandler

PREFIX = "/v1/judge/"
FLEET_PREFIX = "/v1/judge/fleet/"
HOOKS = {"/v1/flagger/rollback": "rollback", "/v1/flagger/confirm-promotion": "promote"}
PARAMS = ("canary", "champion")
METADATA = ("model", "canary", "champion")
MAX_BODY_BYTES = 64 << 10  # a Flagger payload is a few hundred bytes
ERROR = "error"  # the decision of an answer that is not a verdict (never continue/promote)


class _Handler(JsonHandler):
    judge: Judge
    fleet: FleetJudge | None = None
    max_body_bytes = MAX_BODY_BYTES

    def _error(self, status: int, message: str) -> None:  # a verdict too: never fails open
        self._send(status, {"decision": ERROR, "error": message})

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if not self._host_ok():
            return
        if url.path == "/healthz":
            self._send(200, {"ok": True})
        elif url.path == "/metrics":
            self._text(self.judge.metrics())
        elif url.path.startswith(FLEET_PREFIX) and self.fleet is not None:
            self._decide(lambda: self.fleet.judge(_model(url.path, FLEET_PREFIX),
                                                  *_versions(url.query)))
        elif url.path.startswith(PREFIX):
            self._decide(lambda: self.judge.judge(_model(url.path), *_versions(url.query)))
        else:
            self._error(404, f"no route {url.path}: GET {PREFIX}<model>?canary=V&champion=W, "
                             "POST /v1/flagger/rollback|confirm-promotion, GET /metrics")

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not self._host_ok() or (body := self._body()) is None:
            return
        if path not in HOOKS:
            self._error(404, f"no route {path}: POST /v1/flagger/rollback or "
                             "/v1/flagger/confirm-promotion")
            return
        try:
            check_content_type(self.headers.get("Content-Type"))
        except ContractError as e:
            self._error(e.status, str(e))
            return
        self._decide(lambda: self.judge.judge(*_flagger_key(body)), yes=HOOKS[path])

    def _decide(self, ask, yes: str = "") -> None:
        """200 and the answer; with ``yes`` (a Flagger hook), 409 unless it is the answer."""
        try:
            answer = ask()
        except DataError as e:
            self._error(400, str(e))
        except JudgeFull as e:
            self._error(503, str(e))
        except MleopsError as e:
            self._error(500, str(e))
        except Exception as e:  # a bug answers 500; the server stays up
            self._error(500, f"{type(e).__name__}: {e}")
        else:
            self._send(200 if not yes or answer["decision"] == yes else 409, answer)

    def _text(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self) -> None:
        self._error(405, f"{self.command} is not served here")

    do_PUT = do_DELETE = do_PATCH = _refuse


def _model(path: str, prefix: str = PREFIX) -> str:
    model = urllib.parse.unquote(path[len(prefix):])
    if not model or "/" in model:
        raise DataError(f"no route {path}: {prefix}<model> names one model")
    return model


def _versions(query: str) -> tuple[str, str]:
    """(canary, champion) from the query: both, once each, nothing else."""
    try:
        q = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=bool(query),
                                  max_num_fields=8)
    except ValueError as e:
        raise DataError(f"malformed query string: {e}") from None
    if unknown := sorted(set(q) - set(PARAMS)):
        raise DataError(f"unknown query parameter(s) {unknown}: takes canary and champion")
    if missing := [p for p in PARAMS if p not in q]:
        raise DataError(f"missing query parameter(s) {missing}: takes canary and champion")
    if repeated := [p for p in PARAMS if len(q[p]) > 1]:
        raise DataError(f"query parameter(s) {repeated} given more than once")
    return q["canary"][0], q["champion"][0]


def _flagger_key(body: bytes) -> tuple[str, str, str]:
    """(model, canary, champion) from a Flagger webhook payload's ``metadata``."""
    try:
        doc: Any = json.loads(body or b"null")
    except (ValueError, RecursionError) as e:
        raise DataError(f"malformed JSON: {e}") from None
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), str) for k in METADATA):
        raise DataError("a Flagger webhook payload whose metadata has model, canary and "
                        "champion (strings): set them in the Canary's webhook metadata")
    return meta["model"], meta["canary"], meta["champion"]


class JudgeServer:
    """``judge`` on ``host:port`` (port 0 picks a free one), 127.0.0.1 by default."""

    def __init__(self, judge: Judge, host: str = "127.0.0.1", port: int = 0, *,
                 fleet: FleetJudge | None = None):
        """``fleet``: also answer ``GET /v1/judge/fleet/{model}?canary=V&champion=W``."""
        self.judge = judge
        self.server = BoundedServer((host, port), type("JudgeHandler", (_Handler,),
                                                 {"judge": judge, "fleet": fleet}))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> JudgeServer:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="mleops-judge")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a serve_forever that started
            self.server.shutdown()
            self._thread.join()
        self.server.server_close()

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["ERROR", "JudgeServer"]
