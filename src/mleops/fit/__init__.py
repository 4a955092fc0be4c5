"""Fitting: single (Newton / L-BFGS), batched (vmap), minibatch (Adam) and sharded fits."""

from mleops.fit.api import fit
from mleops.fit.batched import BatchFitResult, fit_many
from mleops.fit.minibatch import fit_minibatch
from mleops.fit.result import FitResult

__all__ = ["fit", "fit_many", "fit_minibatch", "FitResult", "BatchFitResult"]
