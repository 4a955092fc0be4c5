"""The MLflow registry as mleops uses it: a policy facade over private MLflow plumbing.

Nobody outside this package touches MLflow's client: other rooms call :class:`Registry`.
"""

from mleops.registry.registry import (
    CANDIDATE_TAG,
    CHALLENGER,
    CHAMPION,
    DUPLICATE_TAG,
    ChampionMoved,
    DuplicateVersion,
    Registry,
)
from mleops.registry.runs import default_tracking_uri
from mleops.registry.session import NotAFleet, RegistryError

__all__ = ["CANDIDATE_TAG", "CHALLENGER", "CHAMPION", "DUPLICATE_TAG", "ChampionMoved",
           "DuplicateVersion", "NotAFleet",
           "Registry", "RegistryError", "default_tracking_uri"]
