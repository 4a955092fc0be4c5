"""The real Prometheus server (Debian's ``prometheus``) on 127.0.0.1, scraping what a test
names, with ``infra/prometheus/rules.yaml`` loaded (its groups evaluated every second)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.mlflow_server import free_port

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus" / "rules.yaml"
SCRAPE_S = 0.5


def binary() -> str | None:
    return shutil.which("prometheus")


class Prometheus:
    def __init__(self, url: str, targets_file: Path):
        self.url, self._targets = url, targets_file

    def scrape(self, *urls: str) -> None:
        """Scrape these ``http://host:port/path`` endpoints (file discovery: no restart)."""
        groups = []
        for u in urls:
            p = urllib.parse.urlsplit(u)
            groups.append({"targets": [p.netloc], "labels": {"__metrics_path__": p.path,
                                                            "job": "mleops-local"}})
        tmp = self._targets.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self._targets)

    def query(self, promql: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            doc = json.load(r)
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def value(self, promql: str) -> float | None:
        res = self.query(promql)
        return float(res[0]["value"][1]) if res else None

    def wait_for(self, promql: str, ok, timeout: float = 60.0) -> float | None:
        """Poll until ``ok(value)``; the last value (an AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        v = None
        while time.monotonic() < deadline:
            v = self.value(promql)
            if v is not None and ok(v):
                return v
            time.sleep(0.25)
        raise AssertionError(f"{promql} = {v} after {timeout} s")

    def targets_up(self) -> int:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as r:
            active = json.load(r)["data"]["activeTargets"]
        return sum(t["health"] == "up" for t in active)


@contextlib.contextmanager
def prometheus_server(tmp: Path, *, rule_interval_s: float = 1.0) -> Iterator[Prometheus]:
    """A Prometheus scraping the file-discovered targets every ``SCRAPE_S`` seconds."""
    tmp.mkdir(parents=True, exist_ok=True)
    rules = yaml.safe_load(RULES.read_text())
    for g in rules["groups"]:
        g["interval"] = f"{int(rule_interval_s * 1000)}ms"
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rules))
    targets = tmp / "targets.json"
    targets.write_text("[]")
    cfg = {"global": {"scrape_interval": f"{int(SCRAPE_S * 1000)}ms",
                      "scrape_timeout": f"{int(SCRAPE_S * 1000)}ms",
                      "evaluation_interval": f"{int(rule_interval_s * 1000)}ms"},
           "rule_files": [str(tmp / "rules.yaml")],
           "scrape_configs": [{"job_name": "mleops-local", "file_sd_configs": [
               {"files": [str(targets)], "refresh_interval": "1s"}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = open(tmp / "prometheus.log", "w")
    proc = subprocess.Popen([binary(), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError((tmp / "prometheus.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield Prometheus(url, targets)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


@pytest.fixture(scope="session")
def prometheus_session(tmp_path_factory) -> Iterator[Prometheus]:
    """One Prometheus per test session (per xdist worker), started on first use."""
    if binary() is None:
        pytest.skip("needs Debian's prometheus")
    with prometheus_server(tmp_path_factory.mktemp("prometheus")) as prom:
        yield prom


@pytest.fixture
def prometheus(prometheus_session: Prometheus) -> Iterator[Prometheus]:
    """The worker's shared Prometheus, its targets emptied after the test. Its TSDB keeps
    earlier tests' series: a test selects its own by a registered model name of its own."""
    try:
        yield prometheus_session
    finally:
        prometheus_session.scrape()
