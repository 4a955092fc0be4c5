"""Fitting: single (Newton / L-BFGS), batched (vmap), keyed fleets, minibatch (Adam), sharded."""

from mleops.fit.api import fit
from mleops.fit.batched import BatchFitResult, fit_many
from mleops.fit.fleet import fit_fleet
from mleops.fit.fleet_result import FleetResult
from mleops.fit.minibatch import fit_minibatch
from mleops.fit.result import FitResult

__all__ = ["fit", "fit_many", "fit_minibatch", "FitResult", "BatchFitResult",
           "fit_fleet", "FleetResult"]
