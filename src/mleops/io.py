"""Reading tabular data (CSV / Parquet, local or in object stores: ``mleops.storage``) into
named float columns, with precise errors.

pyarrow does the parsing (fast, typed); every problem a user can cause - a missing file, a
missing column, text in a numeric column, empty cells - becomes a ``DataError`` naming it.
"""

from __future__ import annotations

import numpy as np

from mleops.errors import DataError
from mleops.storage import Loaded, read_arrow


def read_table(uri: str) -> dict[str, np.ndarray]:
    """Columns of a CSV/Parquet file, a Parquet directory or an object-store URI as numpy
    arrays (nulls become NaN)."""
    return columns_of(read_arrow(uri))


def columns_of(loaded: Loaded) -> dict[str, np.ndarray]:
    table = loaded.table
    if table.num_rows == 0:
        raise DataError(f"{loaded.uri}: no rows")
    return {name: arrow_to_numpy(table.column(name)) for name in table.column_names}


def _bits(buf, offset: int, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little")[offset:offset + n]


def arrow_to_numpy(col) -> np.ndarray:
    """Arrow column -> numpy straight from its buffers (nulls -> NaN).

    pyarrow's own ``to_numpy`` imports pandas (0.2 s), a cost every fresh CLI process and
    pipeline step would pay; numeric columns are plain buffers, so we read them directly.
    """
    import pyarrow as pa

    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return np.array(col.to_pylist(), dtype=object)
    parts = []
    for ch in col.chunks:
        n, off = len(ch), ch.offset
        if pa.types.is_boolean(t):
            vals = _bits(ch.buffers()[1], off, n).astype(np.float64)
        else:
            kind = "f" if pa.types.is_floating(t) else ("i" if pa.types.is_signed_integer(t) else "u")
            dt = np.dtype(f"{kind}{t.bit_width // 8}")
            vals = np.frombuffer(ch.buffers()[1], dtype=dt, count=n, offset=off * dt.itemsize)
        if ch.null_count:
            vals = np.where(_bits(ch.buffers()[0], off, n).astype(bool), vals, np.nan)
        parts.append(vals)
    return np.concatenate(parts) if parts else np.empty(0)


def column(table: dict[str, np.ndarray], name: str, what: str = "column") -> np.ndarray:
    """A numeric column as float64; DataError if it is absent, non-numeric or has gaps."""
    if name not in table:
        raise DataError(f"{what} {name!r} not found; available columns: {', '.join(table)}")
    a = table[name]
    if a.dtype == bool:
        a = a.astype(np.float64)
    if a.dtype.kind not in "iuf":
        bad = next((v for v in a if not _is_number(v)), a[0])
        raise DataError(f"{what} {name!r} must be numeric; found {bad!r} (dtype {a.dtype})")
    a = a.astype(np.float64)
    if np.isnan(a).any():
        i = int(np.flatnonzero(np.isnan(a))[0])
        raise DataError(f"{what} {name!r} has {int(np.isnan(a).sum())} missing/NaN value(s); "
                        f"first at row {i}")
    return a


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False
