"""`make demo`'s main job end to end (the README's first command, minus the set-up)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_stops_what_it_started(tmp_path):
    env = {**os.environ, "MLEOPS_DEMO_DIR": str(tmp_path / "demo")}
    r = subprocess.run([sys.executable, "-m", "mleops.demo"], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "lossy collector: gate REJECTED" in out, out[-6000:]
    assert "PROMOTED." in out and "ROLLED BACK." in out, out[-6000:]  # the whole story
    assert out.count("failed 0") == 2  # no client request failed in either rollout
    assert "drift: sustained drop" in out
    # the fleet act: the 6 endpoints with lossy data found among 200 and kept on v1
    assert "6 found worse (e-bh at FDR 0.05)" in out and ": all found" in out, out[-3000:]
    assert "v2 champion (promoted)" in out and "(rolled_back)" in out
    demo = tmp_path / "demo"
    for png in ("canary_good", "canary_bad", "drift", "pit"):
        assert (demo / "plots" / f"{png}.png").stat().st_size > 10_000
    html = (demo / "report.html").read_text()
    assert "plots/canary_bad.png" in html and "rolled_back" in html
    assert _running_with(str(demo)) == [], "processes left running"
    # the CLI command the demo prints for the drift check does what it says
    line = next(x for x in out.splitlines() if "same check from the CLI:" in x)
    args = line.split("mleops monitor", 1)[1].split("(exit code")[0].split()
    r = subprocess.run([sys.executable, "-m", "mleops.cli.main", "monitor", *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 4 and "DRIFT" in r.stdout, r.stdout + r.stderr


def _running_with(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (model servers, routers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(cmd)
    return found
