"""The Seldon (v1) serving environment without a checkout (mleops.serving.env), and what
guards the pins that could not move (docs/operations/security.md)."""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mleops
from mleops.artifact import ModelArtifact
from mleops.serving import env
from mleops.serving.client import predict
from mleops.serving.process import LocalServer, ServerError, serving_python
from mleops.serving.service import stage_model

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = ROOT / "src" / "mleops" / "serving" / "seldon-requirements.txt"


@pytest.fixture
def no_env(tmp_path, monkeypatch):
    """No $MLEOPS_SERVING_PYTHON, no checkout's serving/.venv above the working directory."""
    monkeypatch.delenv("MLEOPS_SERVING_PYTHON", raising=False)
    monkeypatch.setenv("MLEOPS_SERVING_ENV_DIR", str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "env"


def test_env_dir_is_keyed_by_the_requirements(tmp_path, monkeypatch):
    monkeypatch.delenv("MLEOPS_SERVING_ENV_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    digest = hashlib.sha256(PACKAGED.read_bytes()).hexdigest()[:16]
    assert env.env_dir() == tmp_path / "mleops" / "serving-env" / digest
    monkeypatch.setenv("MLEOPS_SERVING_ENV_DIR", str(tmp_path / "mine"))
    assert env.env_dir() == tmp_path / "mine"


def test_absent_environment_names_the_command(no_env):
    from click.testing import CliRunner

    from mleops.cli.main import main

    assert env.path() is None
    with pytest.raises(ServerError, match="mleops serving-env create"):
        serving_python()
    out = CliRunner().invoke(main, ["serving-env", "path"])
    assert out.exit_code == 1 and "mleops serving-env create" in out.output


def test_a_stamp_for_another_mleops_is_not_the_environment(no_env):
    (no_env / "bin").mkdir(parents=True)
    (no_env / "bin" / "python").touch()
    stamp = {"requirements": env.requirements_digest(), "mleops": env.mleops_source()}
    (no_env / env.STAMP).write_text(json.dumps(stamp))
    assert env.path() == no_env / "bin" / "python"
    (no_env / env.STAMP).write_text(json.dumps({**stamp, "mleops": ["mleops==0.0.1"]}))
    assert env.path() is None


def test_the_packaged_requirements_are_what_make_installs():
    """One list: the wheel's package data, what `make serving-venv` installs (--no-deps),
    and serving/requirements.txt (a link to it); every package pinned."""
    text = PACKAGED.read_text()
    assert env.requirements_text() == text
    assert (ROOT / "serving" / "requirements.txt").resolve() == PACKAGED.resolve()
    recipe = (ROOT / "Makefile").read_text().split("$(SERVING_STAMP):", 1)[1].split("\n\n")[0]
    assert "pip install --quiet --no-deps -r src/mleops/serving/seldon-requirements.txt" in recipe
    reqs = [line.split("#")[0].strip() for line in text.splitlines()]
    reqs = [r for r in reqs if r]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9_.\-]*", r) for r in reqs), reqs
    pins = {r.split("==")[0].lower().replace("_", "-"): r.split("==")[1] for r in reqs}
    assert pins["seldon-core"] == "1.17.1"
    major = lambda name: int(pins[name].split(".")[0])  # noqa: E731
    assert major("gunicorn") >= 23 and major("werkzeug") >= 3 and major("flask-cors") >= 6


def _model(tmp_path) -> str:
    x = np.random.default_rng(0).gamma(2.0, 1.5, 500)
    stage_model(ModelArtifact.from_fit(mleops.fit(x, "gamma")), str(tmp_path / "m"),
                name="latency", version="1")
    return str(tmp_path / "m")


CREATE = ("import sys; from mleops.serving import env; "
          "print(env.create(progress=lambda l: print(l, file=sys.stderr, flush=True)))")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_create_for_real_a_second_creator_waits_and_the_server_answers(no_env, tmp_path):
    """pip-installs the whole list (~2 min on a warm pip cache, longer on a cold one)."""
    run = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
               env={**os.environ, "MLEOPS_SERVING_ENV_DIR": str(no_env)})
    first = subprocess.Popen([sys.executable, "-c", CREATE], **run)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".env.tmp-*")):
        time.sleep(0.2)  # the first holds the lock and builds
    assert list(tmp_path.glob(".env.tmp-*")), first.communicate()
    second = subprocess.Popen([sys.executable, "-c", CREATE], **run)
    out1, err1 = first.communicate(timeout=1100)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    py = no_env / "bin" / "python"
    assert out1.strip() == out2.strip() == str(py)
    assert "pip install" in err1 and "pip install" not in err2  # it reused the first's
    assert env.path() == py and not list(tmp_path.glob(".env.tmp-*"))
    assert str(py) == serving_python()  # the finder takes it (no checkout, no variable)
    with LocalServer(_model(tmp_path), log_path=str(tmp_path / "s.log")) as s:
        status, body = predict(s.url, {"data": {"ndarray": [[1.0], [2.0]]}}, timeout=30)
        assert status == 200, body


def _ld(field: int, payload: bytes) -> bytes:
    def varint(n):
        out = b""
        while n > 0x7F:
            out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
        return out + bytes([n])
    return varint(field << 3 | 2) + varint(len(payload)) + payload


@pytest.mark.slow
def test_deeply_nested_bodies_fail_alone_and_the_server_stays_up(tmp_path):
    """protobuf 3.20.3 (pure-Python here) has no fix for CVE-2025-4565 (unbounded recursion
    parsing nested messages or SGROUP tags). REST: the guard refuses JSON nested deeper than
    MLEOPS_MAX_JSON_DEPTH with a 400 before Seldon parses it. gRPC: the message's recursion
    error fails that call alone; the server keeps answering."""
    import grpc
    from support.http import send as http_send

    with LocalServer(_model(tmp_path), log_path=str(tmp_path / "s.log")) as s:
        deep = b"[" * 100_000 + b"]" * 100_000
        status, _ = http_send(s.http_port, "POST", "/api/v1.0/predictions", deep,
                              {"Content-Type": "application/json"})
        assert status == 400
        nested = b""
        for _ in range(20_000):  # Value{list_value: ListValue{values: [Value{...}]}}
            nested = _ld(6, _ld(1, nested))
        call = grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}").unary_unary(
            "/seldon.protos.Model/Predict")
        for body in (_ld(6, nested), bytes([15 << 3 | 3]) * 100_000):  # jsonData; SGROUPs
            with pytest.raises(grpc.RpcError) as e:
                call(body, timeout=30)
            assert e.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        assert s.proc.poll() is None
        status, body = predict(s.url, {"data": {"ndarray": [[1.0]]}}, timeout=30)
        assert status == 200, body
