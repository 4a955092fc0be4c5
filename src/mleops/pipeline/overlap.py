"""Are the held-out rows the champion's own training rows? A compact sketch says.

A champion scored on rows it was fitted to looks better than it is (its held-out score is a
training score), so the gate's comparison would be unfair to the candidate. Every trained
model records a bottom-k sketch of its training rows' content hashes (``K`` 64-bit hashes,
16 KiB in model.json); evaluation hashes the held-out rows the same way and estimates which
share of them the champion trained on (exact when the champion had fewer than ``K`` distinct
rows). Rows are hashed on everything that makes them one observation (response, censoring,
weight, covariates, time column), so the check is meaningful when rows are distinct: counts
without a time column repeat by nature, and the result then says "undetermined".
"""

from __future__ import annotations

import numpy as np

from mleops.pipeline.dataset import Table

K = 1024
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * _M1
        h = (h ^ (h >> np.uint64(27))) * _M2
        return h ^ (h >> np.uint64(31))


def row_hashes(t: Table) -> np.ndarray:
    """A 64-bit content hash per row (the same rows give the same hashes in any file)."""
    cols = [t.x, t.event, t.weight, t.order]
    if t.X is not None:
        cols += [t.X[:, j] for j in range(t.X.shape[1])]
    h = np.full(t.n, np.uint64(0x9E3779B97F4A7C15))
    for i, c in enumerate(col for col in cols if col is not None):
        bits = np.ascontiguousarray(np.asarray(c, dtype=np.float64) + 0.0).view(np.uint64)
        with np.errstate(over="ignore"):
            h = _mix(h ^ _mix(bits + np.uint64(i + 1)))
    return h


def sketch(t: Table) -> dict:
    """What a model keeps of its training rows: the ``K`` smallest distinct hashes."""
    u = np.unique(row_hashes(t))
    return {"k": K, "hashes": [f"{v:016x}" for v in u[:K]], "n_distinct": int(u.size),
            "n_rows": t.n}


class Sketcher:
    """:func:`sketch` over tables seen one at a time (a streamed fit's batches): the same
    ``K`` smallest distinct hashes. The distinct count is exact while fewer than ``K`` were
    seen, else estimated from the K-th smallest hash (K minimum values: relative error about
    1/sqrt(K), 3%) and marked ``n_distinct_estimated``."""

    def __init__(self) -> None:
        self.low = np.empty(0, dtype=np.uint64)
        self.rows = 0

    def add(self, t: Table) -> None:
        h = row_hashes(t)
        if self.low.size == K:  # full: only hashes below the K-th can enter (no 1e6-row sort)
            h = h[h < self.low[-1]]
        self.low = np.unique(np.concatenate([self.low, h]))[:K]
        self.rows += t.n

    def result(self) -> dict:
        out = {"k": K, "hashes": [f"{v:016x}" for v in self.low], "n_rows": self.rows}
        if self.low.size < K:
            return {**out, "n_distinct": int(self.low.size)}
        kth = (float(self.low[-1]) + 1.0) / 2.0 ** 64
        return {**out, "n_distinct": int(round((K - 1) / kth)), "n_distinct_estimated": True}


def overlap(held: Table, train_sketch: dict | None) -> dict:
    """Estimated share of the held-out rows that were training rows of the sketch's model."""
    if not train_sketch or not train_sketch.get("hashes"):
        return {"share": None, "note": "the champion recorded no training-row sketch"}
    h = row_hashes(held)
    u = np.unique(h)
    if u.size < 0.9 * h.size:
        return {"share": None, "note": f"undetermined: only {u.size} of {h.size} held-out rows "
                                       "are distinct (repeated values; add a time column)"}
    mine = np.array([int(v, 16) for v in train_sketch["hashes"]], dtype=np.uint64)
    complete = len(mine) < int(train_sketch.get("k", K))
    seen = u if complete else u[u <= mine.max()]
    if not seen.size:
        return {"share": 0.0, "note": "no held-out row in the sketch's range"}
    share = float(np.isin(seen, mine).mean())
    return {"share": share, "exact": complete, "rows_compared": int(seen.size),
            "note": ("exact" if complete else f"estimated from {seen.size} rows")}


__all__ = ["K", "Sketcher", "overlap", "row_hashes", "sketch"]
