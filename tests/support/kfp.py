"""A KFP v2beta1 API server stub on 127.0.0.1: records every request and plays run states.

It answers the calls ``kfp.Client`` makes to submit and follow a run (list/create experiment,
create run, get run). A run either plays a given list of states (the last one sticks), or,
with ``execute``, runs the submitted arguments in a thread - the way a cluster would run the
pods - and reports RUNNING until that ends, then SUCCEEDED or FAILED. A failed run carries
``run_details.task_details`` as a KFP backend reports them: the failed leaf task (taken from
kfp's "Inner task failed: 'deploy' inside ..." when executing, else ``failed_task``) with
Argo's generic "Error (exit code 1)", inside its failed DAG; the task's own exception is not
in the API (on a cluster it is only in the pod's log).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from support.http import reply_json, serving

PREFIX = "/apis/v2beta1"


@dataclass
class Stub:
    url: str
    token: str | None = None
    states: tuple[str, ...] = ("RUNNING", "SUCCEEDED")
    error: str = ""
    failed_task: str = ""  # the leaf task a FAILED run's task_details name (states mode)
    execute: Callable[[dict], None] | None = None
    multi_user: bool = True
    hang: str = ""  # a path prefix whose GETs are never answered (until the stub stops)
    requests: list[dict] = field(default_factory=list)
    runs: dict[str, dict] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)

    def calls(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    def created_runs(self) -> list[dict]:
        return [r["body"] for r in self.calls("POST", f"{PREFIX}/runs")]

    # --- what the server does ---------------------------------------------------------------
    def _create_run(self, body: dict) -> dict:
        rid = uuid.uuid4().hex
        run = {"run_id": rid, "display_name": body.get("display_name", ""),
               "experiment_id": body.get("experiment_id", ""), "state": "PENDING"}
        entry = {"run": run, "states": list(self.states), "done": None}
        self.runs[rid] = entry
        if self.execute is not None:
            params = body.get("runtime_config", {}).get("parameters", {})
            threading.Thread(target=self._execute, args=(entry, params), daemon=True).start()
        return run

    def _execute(self, entry: dict, params: dict) -> None:
        try:
            self.execute(params)
            entry["done"] = ("SUCCEEDED", "", "")
        except BaseException as e:  # noqa: BLE001 - the run failed; the API reports it
            inner = re.search(r"Inner task failed: '([\w-]+)'", str(e))
            entry["done"] = ("FAILED", "", inner.group(1) if inner else "")

    def _get_run(self, rid: str) -> dict | None:
        entry = self.runs.get(rid)
        if entry is None:
            return None
        run = dict(entry["run"])
        if self.execute is not None:
            state, err, task = entry["done"] or ("RUNNING", "", "")
        else:
            state = entry["states"].pop(0) if len(entry["states"]) > 1 else entry["states"][0]
            err = self.error if state == "FAILED" else ""
            task = self.failed_task if state == "FAILED" else ""
        run["state"] = state
        if err:
            run["error"] = {"code": 2, "message": err}
        if task:
            run["run_details"] = {"task_details": _failed_tasks(rid, task)}
        return run

    def handle(self, method: str, path: str, query: dict, headers, body: dict):
        self.requests.append({"method": method, "path": path, "query": query,
                              "authorization": headers.get("Authorization"), "body": body})
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"code": 16, "message": "Unauthenticated: no valid bearer token"}
        if path == f"{PREFIX}/healthz" and method == "GET":
            return 200, {"multi_user": self.multi_user, "pipeline_store": "database"}
        if path == f"{PREFIX}/experiments" and method == "GET":
            flt = json.loads(query.get("filter", ["{}"])[0] or "{}")
            name = next((p.get("stringValue") for p in flt.get("predicates", [])), None)
            found = [e for e in self.experiments.values() if e["display_name"] == name]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if path == f"{PREFIX}/experiments" and method == "POST":
            exp = {**body, "experiment_id": uuid.uuid4().hex}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == f"{PREFIX}/runs" and method == "POST":
            return 200, self._create_run(body)
        if path.startswith(f"{PREFIX}/runs/") and method == "GET":
            run = self._get_run(path.rsplit("/", 1)[1])
            return (200, run) if run else (404, {"code": 5, "message": "run not found"})
        return 404, {"code": 5, "message": f"no route {method} {path}"}


def _failed_tasks(run_id: str, task: str) -> list[dict]:
    """The task_details of a run whose ``task`` failed: the leaf, its driver and its DAG."""
    leaf, dag = uuid.uuid4().hex, uuid.uuid4().hex
    failed = {"code": 2, "message": "Error (exit code 1)"}
    return [
        {"run_id": run_id, "task_id": dag, "display_name": "condition-2", "state": "FAILED",
         "error": {"code": 2, "message": f"child '{leaf}' failed"},
         "child_tasks": [{"task_id": leaf}]},
        {"run_id": run_id, "task_id": uuid.uuid4().hex, "display_name": f"{task}-driver",
         "state": "SUCCEEDED", "parent_task_id": dag},
        {"run_id": run_id, "task_id": leaf, "display_name": task, "state": "FAILED",
         "error": failed, "parent_task_id": dag, "pod_name": f"mleops-training-{leaf[:5]}",
         "end_time": "2026-12-07T01:00:00Z"},
    ]


@contextlib.contextmanager
def kfp_stub(**kw) -> Iterator[Stub]:
    """A running stub (``Stub`` fields as keywords); stopped on exit."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 30

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            body = json.loads(raw) if raw else {}
            if stub.hang and method == "GET" and parts.path.startswith(stub.hang):
                stub.requests.append({"method": method, "path": parts.path, "hung": True})
                stub.stopped.wait(120)  # the connection held open, no answer
                return
            with stub.lock:
                code, out = stub.handle(method, parts.path, parse_qs(parts.query),
                                        self.headers, body)
            reply_json(self, code, out)

        def do_GET(self):  # noqa: N802
            self._serve("GET")

        def do_POST(self):  # noqa: N802
            self._serve("POST")

        def log_message(self, *args):
            pass

    with serving(Handler) as server:
        stub = Stub(url=f"http://127.0.0.1:{server.server_address[1]}", **kw)
        try:
            yield stub
        finally:
            stub.stopped.set()  # a hung GET returns before the server shuts down
