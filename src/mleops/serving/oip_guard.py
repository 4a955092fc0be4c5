"""The request contract at the door of the OIP v2 REST server (an ASGI middleware).

KServe's FastAPI app also serves v1 routes, model-repository load/unload (an admin action on
the data plane), ``/docs`` and whatever JSON pydantic accepts, and reads request bodies
without a deadline. Before any of that runs, this guard answers with the OIP error JSON
(``{"error": "..."}``) and a 4xx: a path or method outside the v2 inference and health API;
a model or version this server does not serve (404); a foreign Host header while bound to
loopback (DNS rebinding); a non-JSON Content-Type (none is JSON, as OIP clients such as
tritonclient send none, unless the request has an ``Origin``: a browser's cross-site post); a
binary tensor data extension body (415: not supported); a missing or oversized Content-Length; a
body not received within the read timeout (408); invalid or too deeply nested JSON. A
versioned path for the served version is passed on as the unversioned one (KServe has no
versions), ``/v2/`` as ``/v2``. Every response carries the server's id, which readiness checks compare.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from mleops.serving.contract import ContractError, Limits, check_content_type, parse_body
from mleops.serving.guard import READ_TIMEOUT_S, host_allowed

SERVER_ID_HEADER = "x-mleops-server-id"
BINARY_HEADER = "inference-header-content-length"  # OIP's binary tensor data extension
OPEN = ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models", "/metrics")
MODEL_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
                        r"(?P<rest>|/ready|/infer|/evidence)$")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class Guard:
    """ASGI middleware; ``models`` maps each served model name to its version."""

    def __init__(self, app, *, models: dict[str, str], limits: Limits, bound: str,
                 server_id: str, read_timeout_s: float = READ_TIMEOUT_S):
        self.app, self.models, self.limits, self.bound = app, models, limits, bound
        self.server_id, self.read_timeout_s = server_id.encode(), read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        try:
            scope = self._route(scope, headers)
            body = await self._body(receive, headers) if scope["method"] == "POST" else None
        except ContractError as e:
            return await self._refuse(send, e)
        if body is not None:
            receive = _replay(body, receive)
            if "content-type" not in headers:  # checked JSON: say so to KServe's app
                scope = {**scope, "headers": [*scope.get("headers", []),
                                              (b"content-type", b"application/json")]}
        await self.app(scope, receive, self._stamped(send))

    def _route(self, scope: Scope, headers: dict[str, str]) -> Scope:
        """The scope to pass on (a served version's path made unversioned), or refuse."""
        if not host_allowed(headers.get("host"), self.bound):
            raise ContractError(f"Host header {headers.get('host')!r} refused: this server "
                                "is bound to loopback", 403)
        path, method = scope["path"], scope["method"]
        if path == "/v2/":  # server metadata, as the OIP REST spec spells its path
            path = "/v2"
            scope = {**scope, "path": path, "raw_path": path.encode()}
        match = MODEL_PATH.match(path)
        if path not in OPEN and match is None:
            raise ContractError(f"no route {path}: this server answers the Open Inference "
                                "Protocol v2 (/v2/models/{name}/infer, health, metadata), "
                                "/metrics and a fleet canary's /v2/models/{name}/evidence", 404)
        wanted = "POST" if match and match["rest"] == "/infer" else "GET"
        if method != wanted and not (wanted == "GET" and method == "HEAD"):
            raise ContractError(f"{path} takes {wanted}, not {method}", 405)
        if match is None:
            return scope
        model, version = match["model"], match["version"]
        if model not in self.models:
            raise ContractError(f"no model {model!r} here; this server serves "
                                f"{sorted(self.models)}", 404)
        if version is None:
            return scope
        if version != self.models[model]:
            raise ContractError(f"model {model!r} has no version {version!r} here (serving "
                                f"version {self.models[model]!r})", 404)
        plain = f"/v2/models/{model}{match['rest']}"
        return {**scope, "path": plain, "raw_path": plain.encode()}

    async def _body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        if BINARY_HEADER in headers:
            raise ContractError("the binary tensor data extension (Inference-Header-Content-"
                                "Length) is not supported here: send the tensors as JSON "
                                "data (tritonclient: set_data_from_numpy(..., "
                                "binary_data=False))", 415)
        if "content-type" in headers or "origin" in headers:
            check_content_type(headers.get("content-type"))
        declared = headers.get("content-length")
        if declared is None or not declared.isdigit():
            raise ContractError("Content-Length header missing (chunked bodies are not "
                                "taken)", 411)
        if int(declared) > self.limits.max_body_bytes:
            raise ContractError(f"request body of {declared} bytes exceeds the limit of "
                                f"{self.limits.max_body_bytes}", 413)
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.0))
            except TimeoutError:
                raise ContractError(f"request body not received within "
                                    f"{self.read_timeout_s:g} s", 408) from None
            if message["type"] == "http.disconnect":
                raise ContractError("client disconnected before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > int(declared):
                raise ContractError(f"body is longer than its Content-Length {declared}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if len(body) != int(declared):
            raise ContractError(f"body is {len(body)} bytes, shorter than its Content-Length "
                                f"{declared}")
        parse_body(body, self.limits)  # valid JSON, bounded depth (KServe parses it again)
        return body

    def _stamped(self, send: Send) -> Send:
        async def stamped(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (SERVER_ID_HEADER.encode(), self.server_id)]}
            await send(message)

        return stamped

    async def _refuse(self, send: Send, e: ContractError) -> None:
        body = json.dumps({"error": str(e)}).encode()
        await send({"type": "http.response.start", "status": e.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (SERVER_ID_HEADER.encode(), self.server_id)]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then the client's next events."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


__all__ = ["Guard", "SERVER_ID_HEADER"]
