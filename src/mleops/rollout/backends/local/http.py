"""The router's two HTTP faces: the data plane clients call, and the admin API, apart.

Data plane (``url``): ``POST`` predictions on the plane's wire protocol (:mod:`.wire`:
``/v2/models/{model}/infer``, or Seldon's ``/api/v1.0/predictions``), its health routes and,
for v2, the model's metadata (answered by the champion). Every request passes the contract
first (JSON content type only, bounded, well-formed: :mod:`mleops.serving.contract`), so a
malformed request is refused here with a 4xx and reaches neither version. Admin API (``admin_url``, its own loopback port): ``GET/PUT
/admin/routes``, ``GET /admin/stats``, ``GET /admin/rows``, ``PUT/DELETE /admin/canary``,
``POST /admin/promote``; every method needs ``Authorization: Bearer <token>``, a loopback
Host header (no DNS rebinding) and ``Content-Type: application/json`` (no cross-site form
posts). Both faces: a read timeout on every connection (idle keep-alives and slow clients
free their thread), a bounded number of connections, and Content-Length enforced exactly.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import urllib.parse

from mleops.rollout.backends.local.router import Router
from mleops.serving.contract import ContractError, Limits, check_content_type
from mleops.serving.httpd import BoundedServer, JsonHandler


class _RouterHandler(JsonHandler):
    router: Router

    @property
    def max_body_bytes(self) -> int:  # the router's own bound, which can change while it runs
        return self.router.max_body_bytes


class _DataHandler(_RouterHandler):
    """Predictions and health; nothing that changes the router."""

    limits: Limits

    def _error(self, status: int, message: str) -> None:
        self._send(status, self.router.wire.error(status, message))

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not self._host_ok():
            return
        wire = self.router.wire
        if path in wire.health_paths:
            self._send(200, {"live": True, "ready": True, "protocol": wire.name,
                             "model": wire.model})
        elif path in wire.metadata_paths():
            status, out = self.router.forward_get(path)
            self._send(status, out)
        elif wire.route(path):
            self._error(405, f"{path} takes POST with a JSON body, not GET")
        else:
            self._error(404, f"no route {path} (predictions: POST {wire.predict_path}; the "
                             "admin API is on its own port)")

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not self._host_ok():
            return
        wire = self.router.wire
        if not wire.route(path):
            self._error(404, f"no route {path} (predictions: POST {wire.predict_path}; the "
                             "admin API is on its own port)")
            return
        try:
            check_content_type(self.headers.get("Content-Type"))
        except ContractError as e:
            self._body()  # read it, so the connection stays usable
            self._error(e.status, str(e))
            return
        if (body := self._body()) is None:
            return
        try:
            wire.check(body, self.limits)
        except ContractError as e:
            self.router.count_client_error()
            self._error(e.status, str(e))
            return
        self._send(*self.router.handle(body, {"Content-Type": "application/json"}))

    def _refuse(self) -> None:
        self._error(405, f"{self.command} is not served here")

    do_PUT = do_DELETE = do_PATCH = _refuse


class _AdminHandler(_RouterHandler):
    """The admin API: token, loopback Host and JSON on every method."""

    token: str

    def _allowed(self) -> bool:
        if not self._host_ok():
            return False
        given = self.headers.get("Authorization") or ""
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            self._error(401, "admin API needs Authorization: Bearer <token> (see the data "
                             "plane's record in $MLEOPS_PLANE_DIR)")
            return False
        try:
            check_content_type(self.headers.get("Content-Type"))
        except ContractError as e:
            self._error(e.status, f"admin API: {e}")
            return False
        return True

    def _json(self) -> dict | None:
        body = self._body()
        if body is None:
            return None
        try:
            doc = json.loads(body or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
            return doc
        except (ValueError, RecursionError) as e:
            self._error(400, f"malformed JSON: {e}")
            return None

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if not self._allowed():
            return
        q = urllib.parse.parse_qs(url.query)
        r = self.router
        try:
            if url.path == "/admin/routes":
                self._send(200, r.routes())
            elif url.path == "/admin/stats":
                self._send(200, r.snapshot())
            elif url.path == "/admin/rows":
                self._send(200, r.read(int(q.get("since", ["0"])[0]),
                                       min(int(q.get("limit", ["5000"])[0]), 50_000)))
            else:
                self._error(404, f"no route {url.path}")
        except ValueError as e:
            self._error(400, str(e))

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not self._allowed() or self._body() is None:
            return
        if path == "/admin/promote":
            self._admin("promote")
        else:
            self._error(404, f"no route {path}")

    def do_PUT(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not self._allowed() or (doc := self._json()) is None:
            return
        if path == "/admin/routes":
            try:
                self._send(200, self.router.set_routes(doc.get("weight"), doc.get("mode")))
            except ValueError as e:
                self._error(400, str(e))
        elif path == "/admin/canary":
            self._admin("deploy_canary", str(doc.get("version", "")))
        else:
            self._error(404, f"no route {path}")

    def do_DELETE(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if not self._allowed() or self._body() is None:
            return
        if path == "/admin/canary":
            self._admin("remove_canary")
        else:
            self._error(404, f"no route {path}")

    def _admin(self, hook: str, *args) -> None:
        fn = self.router.hooks.get(hook)
        if fn is None:
            self._error(501, f"this router cannot {hook.replace('_', ' ')}")
            return
        try:
            self._send(200, fn(*args) or self.router.routes())
        except ValueError as e:
            self._error(400, str(e))
        except Exception as e:  # a model server that does not start: 502, router stays up
            self._error(502, f"{type(e).__name__}: {e}")


class RouterServer:
    """The router's data plane on ``host:port`` (port 0 picks a free one) and its admin API
    on ``host:admin_port``; both on 127.0.0.1 by default."""

    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 0, *,
                 admin_port: int = 0, token: str | None = None,
                 limits: Limits | None = None):
        self.router = router
        self.token = token or secrets.token_urlsafe(32)
        limits = limits or Limits.from_env(max_body_bytes=router.max_body_bytes)
        data = type("DataHandler", (_DataHandler,), {"router": router, "limits": limits})
        admin = type("AdminHandler", (_AdminHandler,), {"router": router, "token": self.token})
        self.data = BoundedServer((host, port), data)
        try:
            self.admin = BoundedServer((host, admin_port), admin)
        except BaseException:
            self.data.server_close()
            raise
        self._threads: list[threading.Thread] = []

    @staticmethod
    def _url(server: BoundedServer) -> str:
        host, port = server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return self._url(self.data)

    @property
    def admin_url(self) -> str:
        return self._url(self.admin)

    def start(self) -> RouterServer:
        for name, server in (("router", self.data), ("router-admin", self.admin)):
            t = threading.Thread(target=server.serve_forever, daemon=True, name=f"mleops-{name}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for server in (self.data, self.admin):
            if self._threads:  # shutdown() waits for a serve_forever that must have started
                server.shutdown()
            server.server_close()
        self.router.close()


__all__ = ["RouterServer"]
