"""Pipeline datasets: a validated table in a fixed schema, stored as Parquet.

Ingest reads the user's file once, validates it for the family (same checks as ``fit``), and
writes columns ``x`` [``event``] [``weight``] [covariates...] with the column mapping and a
content hash in the Parquet metadata, so later steps never re-interpret user column names.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from mleops.columns import ColumnSpec, select_columns
from mleops.errors import DataError
from mleops.fit.api import resolve_family
from mleops.fit.data import make_data
from mleops.io import read_table

__all__ = ["ColumnSpec", "Table", "load_source", "read_dataset", "split_indices", "write_table"]


@dataclass
class Table:
    x: np.ndarray
    event: np.ndarray | None = None
    weight: np.ndarray | None = None
    X: np.ndarray | None = None
    features: tuple[str, ...] = ()
    order: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: np.ndarray) -> Table:
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Table(self.x[idx], pick(self.event), pick(self.weight), pick(self.X),
                     self.features, pick(self.order), dict(self.meta))


def _resolve_uri(uri: str) -> str:
    if not uri:
        raise DataError("no data URI given")
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if "://" in uri:
        raise DataError(f"unsupported data URI scheme in {uri!r}: use a local path or file://")
    return uri


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_source(uri: str, spec: ColumnSpec, family: str, *, threshold: float | None = None,
                k: int | None = None) -> Table:
    """Read and validate a user file for ``family``; DataError names any problem."""
    path = _resolve_uri(uri)
    c = select_columns(read_table(path), spec)
    x, event, weight, X, features = c.x, c.event, c.weight, c.X, c.features
    fam = resolve_family(family, threshold=threshold, k=k, features=features or None)
    if fam.modeled_rows(x) is None:  # else fit() keeps the modeled rows, then checks them
        make_data(fam, x, weights=weight, event=event, X=X)  # the same checks as fit()
    meta = {"source": os.path.abspath(path), "data_hash": file_hash(path), "response": c.response,
            "spec": asdict(spec), "n_rows": int(x.shape[0])}
    return Table(x, event, weight, X, features, c.order, meta)


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
    tab = pa.table(cols).replace_schema_metadata(
        {"mleops": json.dumps({**t.meta, "features": list(t.features)})})
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
    X = None
    if features:
        X = np.column_stack([np.ones(tab.num_rows)] + [cols[f"cov:{f}"] for f in features[1:]])
    return Table(cols["x"], cols.get("event"), cols.get("weight"), X, features,
                 cols.get("order"), meta)


def split_indices(n: int, *, seed: int, holdout_fraction: float, time_ordered: bool,
                  order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/held-out split: seeded permutation, or the latest rows held out."""
    if not 0 < holdout_fraction < 1:
        raise DataError(f"holdout fraction must lie in (0, 1), got {holdout_fraction}")
    n_hold = int(round(n * holdout_fraction))
    if n_hold < 2 or n - n_hold < 2:
        raise DataError(f"too few rows to split: {n} rows with holdout fraction "
                        f"{holdout_fraction} leaves {n - n_hold} to train and {n_hold} to test")
    if time_ordered:
        idx = np.argsort(order, kind="stable") if order is not None else np.arange(n)
    else:
        idx = np.random.default_rng(seed).permutation(n)
    return np.sort(idx[: n - n_hold]) if not time_ordered else idx[: n - n_hold], idx[n - n_hold:]
