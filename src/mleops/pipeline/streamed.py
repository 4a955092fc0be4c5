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


def check_budget(max_memory: int, columns: int = 0) -> None:
    """``--train-max-memory``: 0 (automatic) or a size, with ``columns`` enough bytes for
    1,000 rows of them."""
    from mleops.batches import batch_rows

    if max_memory < 0:
        raise DataError(f"--train-max-memory {max_memory}: a size in bytes, 0 = automatic")
    if max_memory and columns:
        batch_rows(max_memory, columns, flag="--train-max-memory")


def streamed_source(train_path: str, family: str, max_memory: int):
    """The table's scan when the train step is to stream it (asked to with ``max_memory``, or
    its columns would not fit in memory), else None; never for a family fitted from several
    starts (those need every row at once)."""
    from mleops.batches import needs_streaming, scan
    from mleops.families import family_class

    check_budget(max_memory)
    if family_class(family).multistart:
        return None
    source = scan(train_path)
    return source if max_memory or needs_streaming(source, len(source.columns)) else None


def fit_table_streamed(source, features: tuple[str, ...], family: str, *, max_memory: int,
                       method: str, options: dict) -> tuple[FitResult, dict]:
    """(fit, training-row sketch) of the pipeline table ``source`` (a scan), whose
    covariates are ``features[1:]``: each batch read once per pass, never the whole table."""
    from mleops.batches import batches
    from mleops.columns import fit_streamed
    from mleops.fit.api import resolve_family
    from mleops.fit.stream import Roles
    from mleops.pipeline.overlap import Sketcher

    names = source.columns
    roles = Roles("x", "event" if "event" in names else "",
                  "weight" if "weight" in names else "",
                  tuple(COVARIATE + f for f in features[1:]))
    fam = resolve_family(family, features=features or None, **options)
    result = fit_streamed(source, fam, roles, max_memory=max_memory or None, method=method)
    sketcher = Sketcher()
    for b in batches(source, source.pieces, list(names), 1 << 20):
        sketcher.add(Table(b["x"], b.get("event"), b.get("weight"), roles.design(b), features,
                           b.get("order")))
    return result, sketcher.result()


__all__ = ["check_budget", "fit_table_streamed", "streamed_source", "table_meta"]
