"""Fitting straight from a table: how a user's columns map onto a model (response, censoring,
weights, covariates), shared by ``mleops fit``, the pipeline's ingest and the monitor."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mleops.errors import DataError
from mleops.fit import FitResult, fit
from mleops.io import column as get_column
from mleops.io import read_table


def split_names(covariates: str | list[str] | None) -> list[str]:
    if covariates is None:
        return []
    names = covariates.split(",") if isinstance(covariates, str) else list(covariates)
    names = [n.strip() for n in names if n.strip()]
    if len(set(names)) != len(names):
        raise DataError(f"covariates: duplicated names in {names}")
    return names


def design_matrix(table: dict, covariates: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Intercept ``const`` plus one column per covariate, in the given order."""
    cols = [get_column(table, c, "covariate") for c in covariates]
    n = len(next(iter(table.values())))
    return np.column_stack([np.ones(n), *cols]), ("const", *covariates)


@dataclass
class ColumnSpec:
    """How a user's table maps onto a model: response, censoring, weights, covariates."""

    column: str = ""
    censor_column: str = ""
    weights_column: str = ""
    covariates: list[str] = field(default_factory=list)
    time_column: str = ""  # orders rows for a time-ordered split

    @classmethod
    def from_params(cls, column="", censor_column="", weights_column="", covariates="",
                    time_column="") -> ColumnSpec:
        return cls(column or "", censor_column or "", weights_column or "",
                   split_names(covariates or None), time_column or "")


@dataclass
class Columns:
    """Validated numeric columns picked from a table by a ColumnSpec."""

    response: str
    x: np.ndarray
    event: np.ndarray | None
    weight: np.ndarray | None
    order: np.ndarray | None
    X: np.ndarray | None
    features: tuple[str, ...]


def select_columns(table: dict, spec: ColumnSpec) -> Columns:
    """The response defaults to the only column no other role claims."""
    claimed = {spec.censor_column, spec.weights_column, spec.time_column, *spec.covariates}
    column = spec.column
    if not column:
        left = [c for c in table if c not in claimed - {""}]
        if len(left) != 1:
            raise DataError(f"choose the response with --column; candidates: {', '.join(left)}")
        column = left[0]
    pick = lambda name, what: get_column(table, name, what) if name else None  # noqa: E731
    X, features = design_matrix(table, spec.covariates) if spec.covariates else (None, ())
    return Columns(column, get_column(table, column), pick(spec.censor_column, "censor column"),
                   pick(spec.weights_column, "weights column"),
                   pick(spec.time_column, "time column"), X, tuple(features))


def fit_table(path: str, family: str, *, column: str | None = None,
              censor_column: str | None = None, covariates=None, threshold=None,
              weights_column: str | None = None, k: int | None = None,
              method: str = "auto", sharded: bool = False) -> FitResult:
    """Read ``path`` and fit; the response column defaults to the only unclaimed one.

    ``sharded`` spreads rows over every device of the job (after
    :func:`mleops.fit.sharded.initialize_distributed`, every process's devices)."""
    c = select_columns(read_table(path), ColumnSpec.from_params(
        column, censor_column, weights_column, covariates))
    return fit(c.x, family, event=c.event, weights=c.weight, X=c.X,
               features=c.features or None, threshold=threshold, k=k, method=method,
               sharded=sharded)
