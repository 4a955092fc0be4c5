"""Named points where a test can make this process die as if killed (``kill -9``).

The fault tests interrupt multi-step sequences (rollback, promotion) at each step in real
processes: ``MLEOPS_FAILPOINTS=promote.registry_moved mleops rollout start ...`` exits with
status 137 right there, running no cleanup, no ``finally``. Unset, a failpoint is one
environment lookup.
"""

from __future__ import annotations

import os

ENV = "MLEOPS_FAILPOINTS"


def hit(name: str) -> None:
    """Die here (status 137, nothing flushed or cleaned up) if ``name`` is armed."""
    armed = os.environ.get(ENV)
    if armed and name in armed.split(","):
        os._exit(137)


__all__ = ["ENV", "hit"]
