"""Pipeline datasets: a validated table in a fixed schema, stored as Parquet.

Ingest reads the user's file once, validates it for the family (same checks as ``fit``), and
writes columns ``x`` [``event``] [``weight``] [covariates...] with the column mapping and a
content hash in the Parquet metadata, so later steps never re-interpret user column names.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from mleops.columns import ColumnSpec, select_columns
from mleops.errors import DataError
from mleops.fit.api import resolve_family
from mleops.fit.data import make_data
from mleops.io import columns_of
from mleops.storage import is_remote, read_arrow

#: Fewest held-out rows the gate decides on: below this the paired test's normal approximation
#: and the calibration checks (PIT KS, interval coverage) say nothing.
MIN_HELDOUT_ROWS = 10

__all__ = ["MIN_HELDOUT_ROWS", "check_validation", "ColumnSpec", "Table", "load_source", "read_dataset", "split_indices", "write_table"]


@dataclass
class Table:
    x: np.ndarray
    event: np.ndarray | None = None
    weight: np.ndarray | None = None
    X: np.ndarray | None = None
    features: tuple[str, ...] = ()
    order: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    #: a fleet's key columns (strings, one array per column) and their names
    keys: tuple[np.ndarray, ...] = ()
    key_names: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: np.ndarray) -> Table:
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Table(self.x[idx], pick(self.event), pick(self.weight), pick(self.X),
                     self.features, pick(self.order), dict(self.meta),
                     tuple(k[idx] for k in self.keys), self.key_names)


def load_source(uri: str, spec: ColumnSpec, family: str, *, threshold: float | None = None,
                k: int | None = None, what: str = "data") -> Table:
    """Read and validate a user's data for ``family`` (a file, a Parquet directory or an
    object-store URI: ``mleops.storage``); DataError names ``what`` and the URI."""
    try:
        loaded = read_arrow(uri)
    except DataError as e:
        raise DataError(f"{what}: {e}") from None
    try:
        c = select_columns(columns_of(loaded), spec)
        x, event, weight, X, features = c.x, c.event, c.weight, c.X, c.features
        fam = resolve_family(family, threshold=threshold, k=k, features=features or None)
        if fam.modeled_rows(x) is None:  # else fit() keeps the modeled rows, then checks them
            make_data(fam, x, weights=weight, event=event, X=X)  # the same checks as fit()
    except DataError as e:
        raise DataError(f"{what} {uri}: {e}") from None
    source = uri if is_remote(uri) else os.path.abspath(uri.removeprefix("file://"))
    meta = {"source": source, "data_hash": loaded.sha256, "files": loaded.files,
            "response": c.response, "spec": asdict(spec), "n_rows": int(x.shape[0])}
    keys = tuple(_key_column(loaded, name, what, uri) for name in spec.key_columns)
    return Table(x, event, weight, X, features, c.order, meta, keys, tuple(spec.key_columns))


def _key_column(loaded, name: str, what: str, uri: str) -> np.ndarray:
    from mleops.fleet_artifact import key_strings

    if name not in loaded.table.column_names:
        raise DataError(f"{what} {uri}: key column {name!r} not found; available columns: "
                        f"{', '.join(loaded.table.column_names)}")
    try:
        return key_strings(loaded.table.column(name).to_pylist())
    except DataError as e:
        raise DataError(f"{what} {uri}: key column {name!r}: {e}") from None


def check_validation(t: Table, uri: str) -> Table:
    """Validation data must be large enough to gate on (``MIN_HELDOUT_ROWS``)."""
    if t.n < MIN_HELDOUT_ROWS:
        raise DataError(f"validation data {uri}: {t.n} row(s); the gate needs at least "
                        f"{MIN_HELDOUT_ROWS} held-out rows")
    return t


def write_table(t: Table, path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"x": t.x}
    if t.event is not None:
        cols["event"] = t.event
    if t.weight is not None:
        cols["weight"] = t.weight
    if t.order is not None:
        cols["order"] = t.order
    for j, name in enumerate(t.features):
        if name != "const":
            cols[f"cov:{name}"] = t.X[:, j]
    for name, values in zip(t.key_names, t.keys):
        cols[f"key:{name}"] = pa.array(values.tolist(), pa.string())
    tab = pa.table(cols).replace_schema_metadata(
        {"mleops": json.dumps({**t.meta, "features": list(t.features),
                               "key_names": list(t.key_names)})})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pq.write_table(tab, path)


def read_dataset(path: str) -> Table:
    import pyarrow.parquet as pq

    if not os.path.exists(path):
        raise DataError(f"dataset not found: {path}")
    tab = pq.read_table(path)
    meta = json.loads((tab.schema.metadata or {}).get(b"mleops", b"{}"))
    from mleops.io import arrow_to_numpy

    cols = {n: arrow_to_numpy(tab.column(n)) for n in tab.column_names}
    features = tuple(meta.pop("features", ()))
    key_names = tuple(meta.pop("key_names", ()))
    X = None
    if features:
        X = np.column_stack([np.ones(tab.num_rows)] + [cols[f"cov:{f}"] for f in features[1:]])
    return Table(cols["x"], cols.get("event"), cols.get("weight"), X, features,
                 cols.get("order"), meta, tuple(cols[f"key:{k}"] for k in key_names), key_names)


def split_indices(n: int, *, seed: int, holdout_fraction: float, time_ordered: bool,
                  order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/held-out split: seeded permutation, or the latest rows held out."""
    if not 0 < holdout_fraction < 1:
        raise DataError(f"holdout fraction must lie in (0, 1), got {holdout_fraction}")
    n_hold = int(round(n * holdout_fraction))
    if n_hold < MIN_HELDOUT_ROWS or n - n_hold < 2:
        raise DataError(f"too few rows to split: {n} rows with holdout fraction "
                        f"{holdout_fraction} leaves {n - n_hold} to train and {n_hold} to test "
                        f"(the gate needs at least {MIN_HELDOUT_ROWS} held-out rows)")
    if time_ordered:
        idx = np.argsort(order, kind="stable") if order is not None else np.arange(n)
    else:
        idx = np.random.default_rng(seed).permutation(n)
    return np.sort(idx[: n - n_hold]) if not time_ordered else idx[: n - n_hold], idx[n - n_hold:]
