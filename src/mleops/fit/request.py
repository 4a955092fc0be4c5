"""Fitting straight from a table file: the column conventions shared by CLI and components."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..io import column as get_column
from ..io import read_table
from .api import fit
from .result import FitResult


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


def fit_table(path: str, family: str, *, column: str | None = None,
              censor_column: str | None = None, covariates=None, threshold=None,
              weights_column: str | None = None, k: int | None = None,
              method: str = "auto") -> FitResult:
    """Read ``path`` and fit; the response column defaults to the only unclaimed one."""
    table = read_table(path)
    covs = split_names(covariates)
    claimed = {censor_column, weights_column, *covs} - {None}
    if column is None:
        left = [c for c in table if c not in claimed]
        if len(left) != 1:
            raise DataError(f"choose the response with --column; candidates: {', '.join(left)}")
        column = left[0]
    x = get_column(table, column)
    event = get_column(table, censor_column, "censor column") if censor_column else None
    w = get_column(table, weights_column, "weights column") if weights_column else None
    X = features = None
    if covs:
        X, features = design_matrix(table, covs)
    return fit(x, family, event=event, weights=w, X=X, features=features,
               threshold=threshold, k=k, method=method)
