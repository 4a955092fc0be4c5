"""A fleet fitted from a table larger than memory: partitioned by key hash, then per pass.

Each key's MLE needs all of that key's rows, and no key's rows are needed by another. So the
table is read once in bounded batches (Parquet row groups) and every row is written to one
of P spill files chosen by a hash of its key: a key's rows all land in one partition. Then
each partition, about 1/P of the table, is fitted in memory by :func:`mleops.fit_fleet`, and
the partitions' results are concatenated (key sets are disjoint) into one
:class:`~mleops.fit.fleet_result.FleetResult`, sorted by key as an in-memory fit's is. P is
chosen so a partition's fit holds about ``max_memory`` bytes. The result equals the in-memory
fit's key for key: the same rows reach the same kernels (the bucketing by row count differs,
so do the padded batch shapes, not the estimates).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import replace

import numpy as np

from mleops.batches import Scan, scan
from mleops.errors import DataError
from mleops.storage import first_line

#: bytes a fleet fit holds per row in memory: the Arrow partition, the key strings and
#: their codes, float64 value/event/weight columns and their padded device copies
#: (benchmarks/fleet.py measures the peak RSS this gives)
BYTES_PER_ROW = 240
READ_ROWS = 1 << 18  # rows per read batch in the partitioning pass


def partitions_for(rows: int, max_memory: int) -> int:
    if max_memory <= 0:
        raise DataError(f"--max-memory must be positive, got {max_memory}")
    return max(1, math.ceil(rows * BYTES_PER_ROW / max_memory))


def _partition_ids(batch, keys: list[str], p: int) -> np.ndarray:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    h = np.zeros(batch.num_rows, np.uint64)
    for k in keys:
        col = batch.column(k)
        if col.null_count:
            raise DataError(f"key column {k!r}: {col.null_count} null key(s); drop or fill "
                            "them first")
        values = pc.cast(col, pa.string()).to_numpy(zero_copy_only=False)
        h = h * np.uint64(1_000_003) ^ pd.util.hash_array(values)
    return (h % np.uint64(p)).astype(np.int64)


def spill(source: Scan, columns: list[str], keys: list[str], p: int, where: str
          ) -> list[str]:
    """Write each row of ``source`` to one of ``p`` Parquet files by its key's hash."""
    import pyarrow.parquet as pq

    paths = [os.path.join(where, f"part-{i:05d}.parquet") for i in range(p)]
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for piece in source.pieces:
            with source.filesystem.open_input_file(piece.path) as fh:
                f = pq.ParquetFile(fh)
                groups = None if piece.row_group is None else [piece.row_group]
                for batch in f.iter_batches(batch_size=READ_ROWS, row_groups=groups,
                                            columns=columns):
                    part = _partition_ids(batch, keys, p)
                    order = np.argsort(part, kind="stable")
                    bounds = np.searchsorted(part[order], np.arange(p + 1))
                    for i in range(p):
                        if bounds[i] == bounds[i + 1]:
                            continue
                        rows = batch.take(order[bounds[i]:bounds[i + 1]])
                        if i not in writers:
                            writers[i] = pq.ParquetWriter(paths[i], rows.schema)
                        writers[i].write_batch(rows)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read {source.uri}: {first_line(e)}") from None
    finally:
        for w in writers.values():
            w.close()
    return [paths[i] for i in sorted(writers)]


def concat(results: list):
    """One FleetResult from partitions' results (disjoint keys), sorted by key."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    cat = lambda name: np.concatenate([getattr(r, name) for r in results])  # noqa: E731
    keys = [np.concatenate([np.asarray(r.key_values[j], dtype=object) for r in results])
            for j in range(len(first.key_names))]
    order = np.array(sorted(range(len(keys[0])), key=lambda i: tuple(k[i] for k in keys)),
                     dtype=np.int64)
    return replace(first, key_values=tuple(k[order] for k in keys),
                   param_array=cat("param_array")[order], se_array=cat("se_array")[order],
                   loglik_array=cat("loglik_array")[order], n_obs_array=cat("n_obs_array")[order],
                   converged_array=cat("converged_array")[order],
                   status_array=cat("status_array")[order], iterations=cat("iterations")[order],
                   **({} if any(r.cov_array is None for r in results) else {
                       "cov_array": cat("cov_array")[order],
                       "grad_norm_array": cat("grad_norm_array")[order]}),
                   shapes=tuple(s for r in results for s in r.shapes))


def fit_fleet_streamed(uri: str, family, *, key: str | list[str], column: str,
                       event: str | None = None, weights: str | None = None,
                       max_memory: int, **kw):
    """:func:`mleops.fit_fleet` over the Parquet dataset at ``uri`` holding about
    ``max_memory`` bytes at a time (see the module docstring)."""
    import pyarrow.parquet as pq

    from mleops.fit.fleet import fit_fleet

    keys = [key] if isinstance(key, str) else list(key)
    source = scan(uri)
    if any(p.row_group is None for p in source.pieces):
        raise DataError(f"{uri}: a streamed fleet reads Parquet (row groups); convert the CSV "
                        "first, or fit it in memory without --max-memory")
    columns = [*keys, column, *(c for c in (event, weights) if c)]
    if missing := [c for c in columns if c not in source.columns]:
        raise DataError(f"column(s) {missing} not in {uri}; it has {list(source.columns)}")
    rows = sum(p.rows for p in source.pieces)
    p = partitions_for(rows, max_memory)
    with tempfile.TemporaryDirectory(prefix="mleops-fleet-") as where:
        results = []
        for path in spill(source, columns, keys, p, where) if p > 1 else [None]:
            table = pq.read_table(path) if path else _whole(source, columns)
            results.append(fit_fleet(table, family, key=keys, column=column, event=event,
                                     weights=weights, **kw))
            del table
            if path:
                os.remove(path)
    return concat(results)


def _whole(source: Scan, columns: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for piece in source.pieces:
        with source.filesystem.open_input_file(piece.path) as fh:
            tables.append(pq.ParquetFile(fh).read_row_group(piece.row_group, columns=columns))
    return pa.concat_tables(tables)


__all__ = ["BYTES_PER_ROW", "concat", "fit_fleet_streamed", "partitions_for"]
