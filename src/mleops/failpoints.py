"""Named points where a test can make this process die as if killed (``kill -9``), or fail.

The fault tests interrupt multi-step sequences (rollback, promotion) at each step in real
processes: ``MLEOPS_FAILPOINTS=promote.registry_moved mleops rollout start ...`` exits with
status 137 right there, running no cleanup, no ``finally``. :func:`fail` points raise instead
(a model server's internal error, which it answers with a 5xx and counts). Unset, a
failpoint is one environment lookup.
"""

from __future__ import annotations

import os

ENV = "MLEOPS_FAILPOINTS"


def hit(name: str) -> None:
    """Die here (status 137, nothing flushed or cleaned up) if ``name`` is armed."""
    if _armed(name):
        os._exit(137)


class InjectedFault(RuntimeError):
    """The error an armed :func:`fail` point raises."""


def fail(name: str) -> None:
    """Raise :class:`InjectedFault` here if ``name`` is armed."""
    if _armed(name):
        raise InjectedFault(f"failpoint {name}")


def _armed(name: str) -> bool:
    armed = os.environ.get(ENV)
    return bool(armed) and name in armed.split(",")


__all__ = ["ENV", "InjectedFault", "fail", "hit"]
