"""A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's ``postgresql`` binaries).

initdb refuses to run as root, so as root the cluster belongs to ``nobody``; otherwise to the
current user. Trust authentication on loopback only; always stopped and removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

from support.mlflow_server import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL binaries not found: apt-get install postgresql "
                           "(.ci/run does)")
    return found[-1]


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres() -> Iterator[tuple[str, dict]]:
    """(SQLAlchemy URI of database ``mlflow``, control dict with ``restart``), then cleanup."""
    root = tempfile.mkdtemp(prefix="mleops-pg-")
    data = os.path.join(root, "data")
    os.makedirs(data)
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
        shutil.chown(data, "nobody")
    port = free_port()
    run = lambda cmd, **kw: subprocess.run(_as_owner(cmd), check=True,  # noqa: E731
                                           capture_output=True, text=True, timeout=120, **kw)
    run([_bin("initdb"), "-D", data, "-A", "trust", "-U", "mleops", "--no-sync"])
    opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"

    def start() -> None:
        run([_bin("pg_ctl"), "-D", data, "-o", opts, "-l", os.path.join(root, "log"), "-w",
             "start"])

    def stop() -> None:
        subprocess.run(_as_owner([_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)

    start()
    try:
        for _ in range(50):
            r = subprocess.run([_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                "mleops", "mlflow"], capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"createdb failed: {r.stderr}")
        control = {"restart": lambda: (stop(), start()), "port": port}
        yield f"postgresql+psycopg2://mleops@127.0.0.1:{port}/mlflow", control
    finally:
        stop()
        shutil.rmtree(root, ignore_errors=True)
