"""Fitting: single (Newton / L-BFGS), batched (vmap), minibatch (Adam) and sharded fits."""

from .api import fit
from .batched import BatchFitResult, fit_many
from .minibatch import fit_minibatch
from .result import FitResult

__all__ = ["fit", "fit_many", "fit_minibatch", "FitResult", "BatchFitResult"]
