"""A rollout's persisted state: the record (phases, weights, the test's sums, cursors), its
file store, and the lease that lets one driver at a time advance it.

Above the kernels (the state holds their sums), below the backends (the Kubernetes and KServe
backends keep it in an annotation store of their own).
"""

from mleops.rollout.state.lease import LEASE_S, Driver
from mleops.rollout.state.store import (
    ANNOTATION,
    FAILED,
    PHASES,
    PROGRESSING,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
    TERMINAL,
    WAITING,
    FileStateStore,
    RolloutState,
    StateStore,
    check_name,
    write_json_atomic,
)

__all__ = ["ANNOTATION", "Driver", "FAILED", "FileStateStore", "LEASE_S", "PHASES",
           "PROGRESSING", "PROMOTED", "PROMOTING", "ROLLED_BACK", "RolloutState", "StateStore",
           "TERMINAL", "WAITING", "check_name", "write_json_atomic"]
