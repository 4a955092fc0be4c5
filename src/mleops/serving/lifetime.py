"""Processes that do not outlive their owner.

A model server is several processes (Seldon's main, its metrics-store manager, the gunicorn
REST and metrics servers and their workers, the gRPC server). If the process that started it
(the router's data plane, ``mleops serve``) is killed with SIGKILL, nothing runs its cleanup:
without this the servers keep their ports forever. So every server process watches the one
it depends on: the main process watches its owner (``MLEOPS_OWNER_PID``), every process it
forks watches its parent; when the watched process is gone the watcher stops its whole process
group (each server is started as its own session, so that group is exactly the server).
"""

from __future__ import annotations

import os
import signal
import threading

OWNER_ENV = "MLEOPS_OWNER_PID"
SERVER_ID_ENV = "MLEOPS_SERVER_ID"  # the health check answers it: proof of who holds the port
POLL_S = 0.5


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _stop_group() -> None:
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)
    finally:
        os._exit(0)


def _watch(check) -> None:
    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(POLL_S):
            if not check():
                _stop_group()

    threading.Thread(target=loop, daemon=True, name="mleops-owner-watch").start()


def watch_parent() -> None:
    """Stop this process group when the current parent exits (it is re-parented)."""
    parent = os.getppid()
    _watch(lambda: os.getppid() == parent)


def watch_owner(pid: int | None = None) -> None:
    """Stop this process group when ``pid`` (default ``$MLEOPS_OWNER_PID``) exits; and make
    every process forked from here on watch its own parent."""
    raw = pid or os.environ.get(OWNER_ENV)
    if raw:
        owner, parent = int(raw), os.getppid()  # a recycled owner pid: the parent changed
        _watch(lambda: alive(owner) and os.getppid() == parent)
    os.register_at_fork(after_in_child=watch_parent)


__all__ = ["OWNER_ENV", "SERVER_ID_ENV", "alive", "watch_owner", "watch_parent"]
