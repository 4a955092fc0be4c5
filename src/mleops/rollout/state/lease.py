"""Who drives a rollout: one controller at a time, by a lease in the rollout's own state.

Two ``mleops rollout resume`` (or a resume beside a ``start``) for one model would otherwise
both tick it. A driving controller writes ``{id, pid, host, until}`` into the state at every
tick; another is refused while that lease runs, unless the holder is a process on this host
that no longer exists (a killed controller is replaced at once; on another host its lease
expires after ``LEASE_S``, or five ticks if longer).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from mleops.errors import RolloutError
from mleops.serving.lifetime import alive

LEASE_S = 30.0


@dataclass
class Driver:
    interval: float = 1.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    def claim(self, lease: dict, now: float) -> dict:
        """The renewed lease for this driver; RolloutError while another holds it."""
        other = lease and lease.get("id") != self.id
        if other and lease.get("until", 0) > now and not (
                lease.get("host") == self.host and not alive(int(lease.get("pid", 0)))):
            raise RolloutError(
                f"this rollout is driven by another controller (pid {lease.get('pid')} on "
                f"{lease.get('host')}) for {lease['until'] - now:.0f} s more; one controller "
                "per rollout")
        return {"id": self.id, "pid": self.pid, "host": self.host,
                "until": now + max(LEASE_S, 5 * self.interval)}


__all__ = ["Driver", "LEASE_S"]
