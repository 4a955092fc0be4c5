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
    key_columns: list[str] = field(default_factory=list)  # a fleet: one model per key

    @classmethod
    def from_params(cls, column="", censor_column="", weights_column="", covariates="",
                    time_column="", key_column="") -> ColumnSpec:
        return cls(column or "", censor_column or "", weights_column or "",
                   split_names(covariates or None), time_column or "",
                   split_names(key_column or None))


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


def response_column(names, spec: ColumnSpec) -> str:
    """The response: as given, else the only column no other role claims."""
    if spec.column:
        return spec.column
    claimed = {spec.censor_column, spec.weights_column, spec.time_column, *spec.covariates,
               *spec.key_columns}
    left = [c for c in names if c not in claimed - {""}]
    if len(left) != 1:
        raise DataError(f"choose the response with --column; candidates: {', '.join(left)}")
    return left[0]


def select_columns(table: dict, spec: ColumnSpec) -> Columns:
    """The response defaults to the only column no other role claims."""
    column = response_column(table, spec)
    pick = lambda name, what: get_column(table, name, what) if name else None  # noqa: E731
    X, features = design_matrix(table, spec.covariates) if spec.covariates else (None, ())
    return Columns(column, get_column(table, column), pick(spec.censor_column, "censor column"),
                   pick(spec.weights_column, "weights column"),
                   pick(spec.time_column, "time column"), X, tuple(features))


def fit_table(path: str, family: str, *, column: str | None = None,
              censor_column: str | None = None, covariates=None, threshold=None,
              weights_column: str | None = None, k: int | None = None,
              method: str = "auto", sharded: bool = False,
              max_memory: int | None = None) -> FitResult:
    """Read ``path`` and fit; the response column defaults to the only unclaimed one.

    Streamed (:func:`fit_streamed`) when ``max_memory`` bounds the bytes held, when the
    columns would not fit in the memory available, or in a multi-process job (each process
    then reads only its share). ``sharded`` spreads rows over every device of the job (after
    :func:`mleops.fit.sharded.initialize_distributed`)."""
    import jax

    from mleops.batches import needs_streaming, scan
    from mleops.fit.api import resolve_family

    spec = ColumnSpec.from_params(column, censor_column, weights_column, covariates)
    fam = resolve_family(family, threshold=threshold, k=k,
                         features=("const", *spec.covariates) if spec.covariates else None)
    multi = sharded and jax.process_count() > 1
    if max_memory or (not fam.multistart and (multi or _maybe_large(path))):
        source = scan(path)
        roles = _roles(source.columns, spec)
        if max_memory or multi or needs_streaming(source, len(roles.columns)):
            return fit_streamed(source, fam, roles, max_memory=max_memory, method=method)
    c = select_columns(read_table(path), spec)
    return fit(c.x, family, event=c.event, weights=c.weight, X=c.X,
               features=c.features or None, threshold=threshold, k=k, method=method,
               sharded=sharded)


def _maybe_large(path: str) -> bool:
    """Worth a scan of the metadata: a remote source, or local files whose bytes alone are a
    sixteenth of the memory available (a small file is read without one)."""
    import os

    from mleops.batches import memory_available
    from mleops.storage import is_remote

    if is_remote(path):
        return True
    local = path.removeprefix("file://")
    size = (os.path.getsize(local) if os.path.isfile(local) else
            sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(local) for f in fs)
            if os.path.isdir(local) else 0)
    return size * 16 > memory_available()


def _roles(names, spec: ColumnSpec):
    from mleops.fit.stream import Roles

    return Roles(response_column(names, spec), spec.censor_column, spec.weights_column,
                 tuple(spec.covariates))


MAX_BATCH_CHUNKS = 20


def fit_streamed(source, fam, roles, *, max_memory: int | None = None,
                 method: str = "auto") -> FitResult:
    """The fit of ``source`` (a :class:`mleops.batches.Scan`) in batches of bounded size;
    in a multi-process job each process streams only its share and only sums cross hosts."""
    import jax

    from mleops.batches import aligned_rows, batch_rows, batches, memory_available, share
    from mleops.fit.stream import CHUNK, fit_stream, local_gather, process_gather

    if method == "lbfgs":
        raise DataError("streamed fits use Newton's method (one pass per step); drop "
                        "--method lbfgs")
    budget = max_memory or min(memory_available() // 4, 1 << 30)
    # Past ~1.3M rows a batch only costs memory: measured on 1e8 rows, one pass took 1.64 s
    # with 1.3M-row batches and 2.3 s with 5.3M (caches, the joining copies at row groups)
    rows = min(batch_rows(budget, len(roles.columns)), MAX_BATCH_CHUNKS * CHUNK)
    rows = aligned_rows(source.pieces, rows)
    rank, size = jax.process_index(), jax.process_count()
    mine = share(source.pieces, rank, size)
    cols = roles.columns
    start = next(batches(source, source.pieces, cols, min(rows, 100_000)), None)
    if start is None:
        raise DataError(f"data: no rows to fit in {source.uri} (empty input)")
    return fit_stream(lambda: batches(source, mine, cols, rows), fam, roles, rows=rows,
                      start=start, gather=process_gather if size > 1 else local_gather)
