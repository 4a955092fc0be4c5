"""The local backend: real model servers behind the router, on 127.0.0.1.

:class:`LocalDataPlane` is what an InferenceService or a SeldonDeployment plus its operator
are on a cluster: its servers speak OIP v2 (KServe's ModelServer, this environment) unless
``protocol="v1"`` asks for Seldon's (its own environment, :mod:`mleops.serving.env`); it
serves the champion, starts a canary server when asked (staging the version from the
registry like Seldon's storage initializer), and swaps or removes it. It runs in its own
process (``mleops rollout serve``) so that the controller can die and restart without a
client noticing, or inside ``mleops rollout start`` for an unattended run.
:class:`LocalBackend` is the controller's side: it talks to the router's admin API only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from mleops.rollout.backends.base import Observation, RolloutError
from mleops.rollout.backends.local.admin import (
    PlaneGone,
    read_credentials,
    remove_credentials,
    write_credentials,
)
from mleops.rollout.backends.local.http import RouterServer
from mleops.rollout.backends.local.router import Router, Upstream
from mleops.rollout.backends.local.wire import DEFAULT_PROTOCOL, wire
from mleops.rollout.backends.prometheus import PrometheusEvidence
from mleops.rollout.state.store import RolloutState
from mleops.serving.model_dir import resolve_model_dir
from mleops.serving.process import LocalServer, OipServer


class LocalDataPlane:
    """Champion (+ canary) model servers and the router; a context manager that stops all."""

    def __init__(self, name: str, *, tracking_uri: str, port: int = 0,
                 stage_root: str | None = None, log_dir: str | None = None,
                 server_threads: int = 4, admin_port: int = 0,
                 protocol: str = DEFAULT_PROTOCOL):
        self.name, self.tracking_uri = name, tracking_uri
        self.wire = wire(protocol, name)
        self._own_stage = stage_root is None  # a directory we made is ours to remove
        self.stage_root = stage_root or tempfile.mkdtemp(prefix="mleops-plane-")
        self.log_dir, self.threads = log_dir, server_threads
        self.port, self.admin_port = port, admin_port
        self.servers: dict[str, LocalServer | OipServer] = {}  # version -> server
        self.lock = threading.Lock()
        self.router_server: RouterServer | None = None
        self.drain_s = 2.0
        self._draining: list[tuple[threading.Timer, LocalServer]] = []

    def _start_server(self, version: str) -> LocalServer:
        model_dir = resolve_model_dir(f"models:/{self.name}/{version}",
                                      tracking_uri=self.tracking_uri,
                                      stage_root=self.stage_root)
        log = os.path.join(self.log_dir, f"server-{version}.log") if self.log_dir else None
        server = self.wire.server(model_dir, version=version, threads=self.threads,
                                  log_path=log)
        server.wait_ready()
        return server

    def start(self) -> LocalDataPlane:
        from mleops.registry import Registry

        found = Registry(self.tracking_uri).champion(self.name)
        if found is None:
            raise RolloutError(f"model {self.name!r} has no champion to serve")
        version = str(found[0])
        try:
            self.servers[version] = self._start_server(version)
            router = Router(Upstream(self.servers[version].url, version), wire=self.wire)
            router.hooks.update(deploy_canary=self.deploy_canary,
                                remove_canary=self.remove_canary, promote=self.promote)
            self.router_server = RouterServer(router, port=self.port,
                                              admin_port=self.admin_port).start()
            write_credentials(self.url, self.admin_url, self.router_server.token)
        except BaseException:  # e.g. the port is taken: no orphaned server process
            self.stop()
            raise
        return self

    @property
    def router(self) -> Router:
        assert self.router_server is not None, "start() first"
        return self.router_server.router

    @property
    def url(self) -> str:
        assert self.router_server is not None, "start() first"
        return self.router_server.url

    @property
    def admin_url(self) -> str:
        assert self.router_server is not None, "start() first"
        return self.router_server.admin_url

    def backend(self) -> LocalBackend:
        """The controller's handle on this plane (admin URL and token in hand)."""
        return LocalBackend(self.url, admin_url=self.admin_url, token=self.router_server.token)

    def deploy_canary(self, version: str) -> dict[str, Any]:
        """Start a server for ``version`` (at 0% traffic); replaces any other canary."""
        if not version:
            raise ValueError("a canary needs a version")
        with self.lock:
            if version == self.router.champion.version:
                raise ValueError(f"version {version} is the champion")
            current = self.router.canary
            if current is not None and current.version == version and \
                    self.servers[version].proc.poll() is None:
                return self.router.routes()
            server = self._start_server(version)  # raises: nothing changed
            self.router.set_canary(Upstream(server.url, version))
            self.servers[version] = server
            if current is not None and current.version != version:
                self.servers.pop(current.version).stop()
            return self.router.routes()

    def remove_canary(self) -> dict[str, Any]:
        with self.lock:
            current = self.router.canary
            self.router.set_canary(None)
            if current is not None and current.version in self.servers:
                self.servers.pop(current.version).stop()
            return self.router.routes()

    def promote(self) -> dict[str, Any]:
        """Swap, then stop the old champion after a drain delay (requests in flight to it
        still get their answers)."""
        with self.lock:
            old = self.router.promote()
            server = self.servers.pop(old.version, None)
            if server is not None:
                timer = threading.Timer(self.drain_s, server.stop)
                timer.daemon = True
                timer.start()
                self._draining.append((timer, server))
            return self.router.routes()

    def stop(self) -> None:
        if self.router_server is not None:
            remove_credentials(self.url, self.router_server.token)
            self.router_server.stop()
            self.router_server = None
        for timer, server in self._draining:
            timer.cancel()
            server.stop()
        self._draining.clear()
        for server in self.servers.values():
            server.stop()
        self.servers.clear()
        if self._own_stage:
            shutil.rmtree(self.stage_root, ignore_errors=True)

    def __enter__(self) -> LocalDataPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _http(method: str, url: str, doc: dict | None = None, *, token: str,
          timeout: float = 30.0) -> dict:
    data = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error", "")
        except ValueError:
            message = ""
        raise RolloutError(f"router {method} {url}: HTTP {e.code} {message}") from e
    except (urllib.error.URLError, OSError) as e:
        raise RolloutError(f"router at {url} unreachable: {e}") from e


class LocalBackend:
    """The controller's handle on a :class:`LocalDataPlane` through its router's admin API.

    ``router_url`` is the data plane clients call (what the state records); the admin URL
    and token come from the plane's owner-only record (:mod:`.admin`) unless given. With
    ``evidence`` the likelihood evidence comes from Prometheus scraping the model servers
    (unpaired sums, as on a cluster) instead of the router's row records; the router still
    moves traffic and reports requests, errors and latency."""

    def __init__(self, router_url: str, *, admin_url: str = "", token: str = "",
                 deploy_timeout: float = 300.0, evidence: PrometheusEvidence | None = None):
        self.url, self.deploy_timeout = router_url.rstrip("/"), deploy_timeout
        self._admin, self._token = admin_url.rstrip("/"), token
        self.evidence = evidence
        self.pairs_rows = evidence is None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "local", "router": self.url}
        if self.evidence is not None:
            out["evidence"] = {"model": self.evidence.model, **self.evidence.describe()}
        return out

    def _call(self, method: str, path: str, doc: dict | None = None, **kw) -> dict:
        if not self._token:  # read lazily: a restarted plane writes a new record
            self._admin, self._token = read_credentials(self.url)
        try:
            return _http(method, f"{self._admin}{path}", doc, token=self._token, **kw)
        except RolloutError as e:
            if "HTTP 401" in str(e) or "unreachable" in str(e):
                self._token = ""  # the plane may have restarted: re-read its record next time
            raise

    def deploy_canary(self, state: RolloutState) -> None:
        self._call("PUT", "/admin/canary", {"version": state.candidate_version},
                   timeout=self.deploy_timeout)
        stats = self._call("GET", "/admin/stats")
        # the rows already recorded belong to earlier rollouts; guardrails count from here
        state.cursor = {"seq": stats["records"], "base": stats["stats"],
                        "client_errors": stats.get("client_errors", 0)}
        if self.evidence is not None:
            state.cursor["prometheus"] = self.evidence.start(state.candidate_version,
                                                             state.champion_version)

    def set_weight(self, state: RolloutState) -> None:
        """The canary's share; a router that lost its canary (restarted by its supervisor)
        gets it deployed again first, with the read cursor restarted on the new router."""
        try:
            self._call("PUT", "/admin/routes", {"weight": state.weight, "mode": state.mode})
        except RolloutError as e:
            if "no canary deployed" not in str(e):
                raise
            state.event("canary_redeployed", reason=str(e))
            self.deploy_canary(state)
            self._call("PUT", "/admin/routes", {"weight": state.weight, "mode": state.mode})

    def rollback(self, state: RolloutState) -> None:
        """Canary out. A router that is gone (connection refused on 127.0.0.1) serves no one:
        that is rolled back too; any other failure is raised (the rollback stays pending)."""
        try:
            self._call("DELETE", "/admin/canary")
        except PlaneGone:
            pass
        except RolloutError as e:
            if not isinstance(e.__cause__, ConnectionRefusedError) and \
                    "Connection refused" not in str(e):
                raise

    def promote(self, state: RolloutState) -> None:
        routes = self._call("GET", "/admin/routes")
        if routes["champion"]["version"] != state.candidate_version:
            self._call("POST", "/admin/promote")

    def _read_prometheus(self, state: RolloutState) -> Observation:
        cand, champ = state.candidate_version, state.champion_version
        sums, prom_arms, cursor = self.evidence.read(cand, champ,
                                                     state.cursor.get("prometheus", {}))
        snapshot = self._call("GET", "/admin/stats")
        base = state.cursor.get("base", {})
        arms: dict[str, Any] = {}
        for arm, v in (("canary", cand), ("champion", champ)):
            arms[arm] = {**_since(snapshot["stats"].get(v, {}), base.get(v, {})),
                         **prom_arms[arm]}  # rows and support from the servers' counters
        arms["client_errors"] = snapshot.get("client_errors", 0) - int(
            state.cursor.get("client_errors", 0))
        state.cursor["prometheus"] = cursor  # only once both sources were read
        empty = np.zeros(0)
        return Observation(empty, empty, canary_sums=sums["canary"],
                           champion_sums=sums["champion"], arms=arms)

    def read(self, state: RolloutState) -> Observation:
        if self.evidence is not None:
            return self._read_prometheus(state)
        cand, champ = state.candidate_version, state.champion_version
        canary: list[list[float]] = []
        champion: list[list[float]] = []
        seq = int(state.cursor.get("seq", 0))
        while True:
            page = self._call("GET", f"/admin/rows?since={seq}&limit=20000")
            for r in page["records"]:
                if state.mode == "shadow":
                    if r.get("paired") and r["canary_version"] == cand \
                            and r["champion_version"] == champ:
                        canary.append(r["canary"])
                        champion.append(r["champion"])
                else:
                    if r.get("canary_version") == cand and "canary" in r:
                        canary.append(r["canary"])
                    if r.get("champion_version") == champ and "champion" in r:
                        champion.append(r["champion"])
            seq = page["next"]
            if seq >= page["head"] or not page["records"]:
                break
        snapshot = self._call("GET", "/admin/stats")
        stats = snapshot["stats"]
        state.cursor["seq"] = seq  # only once everything is read: a failure re-reads
        base = state.cursor.get("base", {})
        arms: dict[str, Any] = {arm: _since(stats.get(v, {}), base.get(v, {}))
                                for arm, v in (("canary", cand), ("champion", champ))}
        # requests refused before or by both versions (malformed, wrong columns): no evidence
        arms["client_errors"] = snapshot.get("client_errors", 0) - int(
            state.cursor.get("client_errors", 0))
        flat = lambda chunks: np.concatenate(chunks) if chunks else np.zeros(0)  # noqa: E731
        ids = lambda chunks: np.repeat(np.arange(len(chunks)), [len(r) for r in chunks])  # noqa: E731
        # every record is one request: its rows share it (the test weighs requests, not rows)
        return Observation(flat(canary), flat(champion), canary_requests=ids(canary),
                           champion_requests=ids(champion), arms=arms)


def _since(now: dict, base: dict) -> dict[str, Any]:
    """Counters since the canary was deployed (latency is the router's recent window)."""
    out = {k: now.get(k, 0) - base.get(k, 0)
           for k in ("requests", "errors", "rows", "outside_support")}
    kinds, before = now.get("error_kinds") or {}, base.get("error_kinds") or {}
    out["error_kinds"] = {k: v - before.get(k, 0) for k, v in kinds.items()
                          if v - before.get(k, 0)}
    out["p99_ms"] = now.get("p99_ms")
    out["error_basis"] = "only requests the champion answered count"
    out["outside_support_rate"] = out["outside_support"] / max(out["requests"], 1)
    return out


__all__ = ["LocalBackend", "LocalDataPlane"]
