"""Errors and warnings users can catch by type (the CLI maps DataError to exit code 2)."""

from __future__ import annotations


class MleopsError(Exception):
    """Base class for every error mleops raises on purpose."""


class DataError(MleopsError, ValueError):
    """Input data cannot be used as given: the message names the problem and where it is."""


class FitError(MleopsError, RuntimeError):
    """The optimiser could not produce a finite estimate (never returned as NaN)."""


class ConvergenceWarning(UserWarning):
    """A fit stopped before its convergence criterion was met; the result says so too."""


class RolloutError(MleopsError, RuntimeError):
    """A rollout could not start or a backend refused a step; the message says which.

    It lives here, not in the rollout's backend interface, because the persisted state's
    lease raises it too and sits below the backends."""
