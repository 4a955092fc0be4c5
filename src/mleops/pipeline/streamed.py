"""The train step over a training table larger than its pod's memory.

Ingest and split write the pipeline's tables as Parquet (``mleops.pipeline.dataset``); a fit
holds several float64 copies of every column it reads, so a table that split could write
may still not fit in the train pod. The train step then streams it (:func:`fit_streamed`):
row groups read in batches of bounded size, the same answers as the in-memory fit. It does
so when ``max_memory`` is given or when the columns would not fit in the memory the pod has
left (its cgroup limit: ``mleops.batches.memory_available``). The training-row sketch the
gate's overlap check needs is built over the same batches.
"""

from __future__ import annotations

import json

from mleops.errors import DataError
from mleops.fit import FitResult
from mleops.pipeline.dataset import Table

COVARIATE = "cov:"  # the pipeline table's covariate columns (dataset.write_table)


def table_meta(train_path: str) -> dict:
    """A pipeline table's metadata (source, hashes, features), from its footer alone."""
    import os

    import pyarrow.parquet as pq

    if not os.path.exists(train_path):
        raise DataError(f"dataset not found: {train_path}")
    try:
        schema = pq.read_schema(train_path)
    except (OSError, ValueError) as e:
        raise DataError(f"dataset {train_path}: {e}") from None
    return json.loads((schema.metadata or {}).get(b"mleops", b"{}"))


def table_roles(train_path: str):
    """(scan, Roles, features) of a pipeline table, from its metadata alone."""
    from mleops.batches import scan
    from mleops.fit.stream import Roles

    source = scan(train_path)
    features = tuple(table_meta(train_path).get("features", ()))
    names = source.columns
    roles = Roles("x", "event" if "event" in names else "",
                  "weight" if "weight" in names else "",
                  tuple(COVARIATE + f for f in features[1:]))
    return source, roles, features


def should_stream(train_path: str, family: str, max_memory: int, **options) -> bool:
    """Stream when asked to (``max_memory``), or when the columns would not fit in memory;
    never for a family fitted from several starts (those need every row at once)."""
    from mleops.batches import needs_streaming, scan
    from mleops.families import family_class

    if max_memory < 0:
        raise DataError(f"--train-max-memory {max_memory}: a size in bytes, 0 = automatic")
    if family_class(family).multistart:
        return False
    if max_memory:
        return True
    source = scan(train_path)
    return needs_streaming(source, len(source.columns))


def fit_table_streamed(train_path: str, family: str, *, max_memory: int, method: str,
                       options: dict) -> tuple[FitResult, dict]:
    """(fit, training-row sketch): each batch read once per pass, never the whole table."""
    from mleops.batches import batches
    from mleops.columns import fit_streamed
    from mleops.fit.api import resolve_family
    from mleops.pipeline.overlap import Sketcher

    source, roles, features = table_roles(train_path)
    fam = resolve_family(family, features=features or None, **options)
    result = fit_streamed(source, fam, roles, max_memory=max_memory or None, method=method)
    sketcher = Sketcher()
    cols = list(source.columns)
    for b in batches(source, source.pieces, cols, 1 << 20):
        sketcher.add(_table(b, roles, features))
    return result, sketcher.result()


def _table(b: dict, roles, features: tuple[str, ...]) -> Table:
    X = roles.design(b)
    return Table(b["x"], b.get("event"), b.get("weight"), X, features, b.get("order"))


__all__ = ["fit_table_streamed", "should_stream", "table_meta", "table_roles"]
