"""Reading tabular data (CSV / Parquet) into named float columns, with precise errors.

pyarrow does the parsing (fast, typed); every problem a user can cause - a missing file, a
missing column, text in a numeric column, empty cells - becomes a ``DataError`` naming it.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import DataError


def read_table(path: str) -> dict[str, np.ndarray]:
    """Columns of a ``.csv``/``.parquet`` file as numpy arrays (nulls become NaN)."""
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path}")
    try:
        if path.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path)
    except Exception as e:  # pyarrow raises ArrowInvalid & co. with a useful message
        raise DataError(f"cannot read {path}: {e}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    out = {}
    for name in table.column_names:
        col = table.column(name)
        arr = col.to_numpy(zero_copy_only=False)
        if col.null_count and arr.dtype.kind in "iufb":
            arr = np.where(col.is_null().to_numpy(zero_copy_only=False), np.nan,
                           arr.astype(np.float64))
        out[name] = arr
    return out


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
