"""The Seldon (v1) model server's own environment, made on demand without a checkout.

seldon-core 1.17.1 (the last Apache-2.0 release) needs numpy<2 and protobuf<4, so the v1
server runs in its own virtualenv. The packages it holds are pinned, every one, in
``seldon-requirements.txt`` shipped inside this package (the single list: ``make
serving-venv`` installs the same file) and installed with ``--no-deps``: seldon-core's own
metadata pins gunicorn, Werkzeug, Flask-Cors and urllib3 to releases with known
vulnerabilities, and the list replaces them with fixed ones (docs/operations/security.md).

The environment lives in ``$MLEOPS_SERVING_ENV_DIR``, else in the user cache
(``$XDG_CACHE_HOME`` or ``~/.cache``) under ``mleops/serving-env/<first 16 hex of the sha256
of the requirements>``: a new list gets a new environment. It is built in a temporary
directory next to its place, under a lock (``fcntl``), and renamed into place once a stamp
records what went in; a second creator waits on the lock and reuses the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mleops.errors import MleopsError

REQUIREMENTS = "seldon-requirements.txt"
STAMP = ".mleops-serving-env.json"
ENV_DIR_ENV = "MLEOPS_SERVING_ENV_DIR"


class ServingEnvError(MleopsError, RuntimeError):
    """The serving environment is absent or could not be built."""


def requirements_text() -> str:
    """The pinned list the environment installs (package data of ``mleops.serving``)."""
    return importlib.resources.files("mleops.serving").joinpath(REQUIREMENTS).read_text()


def requirements_digest(text: str | None = None) -> str:
    return hashlib.sha256((requirements_text() if text is None else text).encode()
                          ).hexdigest()[:16]


def env_dir() -> Path:
    """``$MLEOPS_SERVING_ENV_DIR``, else the user cache dir keyed by the requirements."""
    if d := os.environ.get(ENV_DIR_ENV):
        return Path(d).expanduser().absolute()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache.absolute() / "mleops" / "serving-env" / requirements_digest()


def _python(d: Path) -> Path:
    return d / "bin" / "python"


def mleops_source() -> list[str]:
    """What ``pip install --no-deps`` takes to put this mleops into the environment: the
    checkout an editable (``-e``) or local install came from, the wheel or VCS commit it was
    installed from, else ``mleops==<version>`` from the index."""
    try:
        dist = importlib.metadata.distribution("mleops")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree on sys.path
        root = Path(__file__).resolve().parents[3]
        if (root / "pyproject.toml").exists():
            return ["-e", str(root)]
        raise ServingEnvError("mleops is not installed as a distribution and no source "
                              "tree was found: cannot install it into the serving "
                              "environment") from None
    direct = json.loads(dist.read_text("direct_url.json") or "null")
    if direct:
        url = direct.get("url", "")
        if vcs := direct.get("vcs_info"):
            ref = vcs.get("commit_id") or vcs.get("requested_revision")
            return [f"{vcs['vcs']}+{url}" + (f"@{ref}" if ref else "")]
        if url.startswith("file://"):
            local = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
            if os.path.exists(local):
                return ["-e", local] if direct.get("dir_info", {}).get("editable") else [local]
        elif url:  # an archive URL
            return [url]
    return [f"mleops=={dist.version}"]


def _stamp(d: Path) -> dict | None:
    try:
        return json.loads((d / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _current(stamp: dict | None) -> bool:
    """The stamp records this requirements list and this mleops (an upgraded mleops must not
    be served by the code of the one the environment was made with)."""
    return bool(stamp) and stamp.get("requirements") == requirements_digest() and \
        stamp.get("mleops") == mleops_source()


def path() -> Path | None:
    """The environment's interpreter, if it is made (its stamp is there and current)."""
    d = env_dir()
    return _python(d) if _current(_stamp(d)) and _python(d).exists() else None


@contextlib.contextmanager
def _locked(d: Path):
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent / f".{d.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        yield


def _run(cmd: list[str], what: str) -> None:
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.returncode:
        tail = "\n".join(out.stdout.strip().splitlines()[-15:])
        raise ServingEnvError(f"serving environment: {what} failed (exit {out.returncode}):"
                              f"\n{tail}")


def _relocate(tmp: Path, final: Path) -> None:
    """Scripts in ``bin/`` name the directory they were made in (shebangs, activate)."""
    old, new = str(tmp).encode(), str(final).encode()
    for f in (tmp / "bin").iterdir():
        if f.is_file() and not f.is_symlink():
            data = f.read_bytes()
            if old in data:
                f.write_bytes(data.replace(old, new))
    cfg = tmp / "pyvenv.cfg"
    cfg.write_bytes(cfg.read_bytes().replace(old, new))


def _build(tmp: Path, final: Path, progress: Callable[[str], None]) -> None:
    reqs = tmp / REQUIREMENTS
    source = mleops_source()
    progress(f"serving environment: python -m venv {final}")
    _run([sys.executable, "-m", "venv", str(tmp)], "python -m venv")
    reqs.write_text(requirements_text())
    py = str(_python(tmp))
    pip = [py, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    progress("serving environment: pip install seldon-core 1.17.1 and its pinned dependencies")
    _run([*pip, "install", "--quiet", "--no-deps", "-r", str(reqs)],
         f"pip install -r {REQUIREMENTS}")
    progress(f"serving environment: pip install --no-deps {' '.join(source)}")
    _run([*pip, "install", "--quiet", "--no-deps", *source], "installing mleops")
    _run([py, "-c", "import seldon_core.microservice, mleops.serving.launch"],
         "the import check (seldon_core, mleops.serving.launch)")
    _relocate(tmp, final)
    (tmp / STAMP).write_text(json.dumps({
        "requirements": requirements_digest(), "mleops": source,
        "python": sys.version.split()[0], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        indent=1))


def create(progress: Callable[[str], None] = print) -> Path:
    """Make the environment (idempotent) and return its interpreter. Built in a temporary
    directory beside its place and renamed into place when complete; concurrent creators
    serialise on a lock file and the later ones reuse what the first made."""
    d = env_dir()
    with _locked(d):
        if (py := path()) is not None:
            return py
        tmp = d.parent / f".{d.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _build(tmp, d, progress)
            if d.exists():  # stale (another mleops) or broken: replace it whole
                old = d.parent / f".{d.name}.old-{os.getpid()}"
                os.rename(d, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, d)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    progress(f"serving environment ready: {_python(d)}")
    return _python(d)


def ensure(progress: Callable[[str], None] = print) -> Path:
    """The environment's interpreter, making it first (with one line of progress) if absent."""
    if (py := path()) is not None:
        return py
    progress(f"creating the Seldon serving environment in {env_dir()} (once, ~2-4 min)")
    return create(progress=progress)


def absent_message() -> str:
    return (f"serving environment not found in {env_dir()}: run `mleops serving-env create` "
            "(seldon-core needs its own environment; made once, ~2-4 min), or set "
            "MLEOPS_SERVING_PYTHON (in a checkout, `make serving-venv` makes serving/.venv)")


__all__ = ["ServingEnvError", "absent_message", "create", "ensure", "env_dir", "mleops_source",
           "path", "requirements_digest", "requirements_text"]
