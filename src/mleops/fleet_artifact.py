"""The fleet artifact: thousands of keyed models of one family as one table (no pickle).

An MLE model is a parameter vector, so a fleet is a table: one row per key with its
parameters, standard errors and diagnostics, written as Parquet (``fleet.parquet``) beside a
small JSON header (``fleet.json``: family, key and parameter names, the fallback policy and
the digests a registry tags a version with). Rows of many keys are scored in one compiled,
vmapped gather: each row takes its key's parameter vector, so a request mixing 20 keys costs
one kernel call, not 20.

Keys are matched as strings (an integer store id 17 is the key "17"), one string per key
column. A key that is not in the table, or whose fit has no usable estimate (too few rows,
not converged, on a boundary), is *unservable*: :class:`~mleops.errors.DataError` naming it,
unless the artifact's ``unknown_key`` policy is ``"pooled"`` (then the pooled fit over every
key's rows, stored in the header, answers for it).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from mleops.errors import DataError

HEADER, TABLE = "fleet.json", "fleet.parquet"
SCHEMA_VERSION = 1
UNKNOWN_KEY = ("reject", "pooled")
MAX_NAMED = 5  # unknown keys named in one error message


def key_strings(values) -> np.ndarray:
    """Key values as strings; refuses missing and empty keys (a key must name something)."""
    a = np.asarray(values, dtype=object)
    if a.ndim != 1:
        raise DataError(f"keys must be one value per row, got shape {a.shape}")
    bad = [i for i, v in enumerate(a.tolist()) if v is None or (isinstance(v, float) and
                                                                 not np.isfinite(v))]
    if bad:
        raise DataError(f"{len(bad)} row(s) have no key (first at row {bad[0]})")
    out = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in a.tolist()],
                   dtype=object)
    if (empty := np.flatnonzero(out == "")).size:
        raise DataError(f"{empty.size} row(s) have an empty key (first at row {int(empty[0])})")
    return out


def key_labels(keys: list) -> np.ndarray:
    """One label per row from one array per key column: the key as a string, a composite key
    joined by "/" (what the fleet gate's tables and the merge are keyed by)."""
    cols = [np.asarray(k).astype(str) for k in keys]
    return np.array(["/".join(t) for t in zip(*cols)], dtype=str)


@dataclass
class FleetArtifact:
    family: dict
    key_names: list[str]
    param_names: list[str]
    keys: list[np.ndarray]  # one array of strings per key column, one entry per key
    params: np.ndarray  # (K, k) natural parameters; NaN where a key has no estimate
    se: np.ndarray  # (K, k)
    n_obs: np.ndarray  # (K,)
    loglik: np.ndarray  # (K,)
    status: np.ndarray  # (K,) "converged" or why not
    source_version: np.ndarray  # (K,) the registry version each key's parameters came from
    pooled: dict | None = None  # natural parameters of one fit over every key's rows
    unknown_key: str = "reject"
    metadata: dict = field(default_factory=dict)
    _index: object = field(default=None, init=False, repr=False, compare=False)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def from_fleet(cls, fleet, *, pooled=None, unknown_key: str = "reject",
                   **metadata) -> FleetArtifact:
        """From a :class:`~mleops.fit.fleet_result.FleetResult` (and optionally a pooled
        :class:`~mleops.fit.FitResult` for ``unknown_key="pooled"``)."""
        art = cls(family=dict(fleet.family), key_names=list(fleet.key_names),
                  param_names=list(fleet.param_names),
                  keys=[key_strings(v) for v in fleet.key_values],
                  params=np.asarray(fleet.param_array, float),
                  se=np.asarray(fleet.se_array, float),
                  n_obs=np.asarray(fleet.n_obs_array, np.int64),
                  loglik=np.asarray(fleet.loglik_array, float),
                  status=np.asarray(fleet.status_array, dtype=object),
                  source_version=np.full(len(fleet), "", dtype=object),
                  pooled=None if pooled is None else dict(pooled.params),
                  unknown_key=unknown_key, metadata={"method": fleet.method, **metadata})
        art.check()
        return art

    def check(self) -> None:
        if self.unknown_key not in UNKNOWN_KEY:
            raise DataError(f"unknown_key must be one of {UNKNOWN_KEY}, not "
                            f"{self.unknown_key!r}")
        if self.unknown_key == "pooled" and not self.pooled:
            raise DataError("unknown_key='pooled' needs the pooled fit's parameters")
        k = len(self)
        if any(len(v) != k for v in self.keys) or self.params.shape != (k, len(
                self.param_names)):
            raise DataError("fleet artifact: key and parameter columns differ in length")
        if len(set(self.key_tuples())) != k:
            raise DataError("fleet artifact: a key appears twice")

    def __len__(self) -> int:
        return int(self.params.shape[0])

    def key_tuples(self) -> list[tuple[str, ...]]:
        return list(zip(*[v.tolist() for v in self.keys]))

    @property
    def servable(self) -> np.ndarray:
        """Keys whose estimate may answer requests: converged, finite parameters."""
        return (self.status == "converged") & np.isfinite(self.params).all(axis=1)

    def digests(self) -> dict[str, str]:
        """What a registry version is tagged with: family, key count and the key set's
        sha256 (sorted keys, one per line, columns joined by a tab)."""
        lines = sorted("\t".join(t) for t in self.key_tuples())
        sha = hashlib.sha256("\n".join(lines).encode()).hexdigest()
        return {"mleops.fleet.family": self.family["name"],
                "mleops.fleet.key_columns": ",".join(self.key_names),
                "mleops.fleet.key_count": str(len(self)),
                "mleops.fleet.key_set_sha256": sha}

    # --- persistence ---------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Write ``fleet.json`` and ``fleet.parquet`` into directory ``path``."""
        import pyarrow.parquet as pq

        os.makedirs(path, exist_ok=True)
        pq.write_table(self.to_table(), os.path.join(path, TABLE))
        header = {"schema_version": SCHEMA_VERSION, "kind": "fleet", "family": self.family,
                  "key_names": self.key_names, "param_names": self.param_names,
                  "pooled": self.pooled, "unknown_key": self.unknown_key,
                  "metadata": self.metadata, "digests": self.digests()}
        with open(os.path.join(path, HEADER), "w") as f:
            json.dump(header, f, indent=2, allow_nan=True)
        return path

    def to_table(self):
        """pyarrow Table: key columns, params, ``se_<param>``, n_obs, loglik, status,
        source_version."""
        import pyarrow as pa

        cols = {n: pa.array(v.tolist(), pa.string()) for n, v in zip(self.key_names, self.keys)}
        for j, n in enumerate(self.param_names):
            cols[n] = pa.array(self.params[:, j])
        for j, n in enumerate(self.param_names):
            cols[f"se_{n}"] = pa.array(self.se[:, j])
        cols.update(n_obs=pa.array(self.n_obs), loglik=pa.array(self.loglik),
                    status=pa.array(self.status.tolist(), pa.string()),
                    source_version=pa.array(self.source_version.tolist(), pa.string()))
        return pa.table(cols)

    @classmethod
    def load(cls, path: str) -> FleetArtifact:
        import pyarrow.parquet as pq

        try:
            with open(os.path.join(path, HEADER)) as f:
                h = json.load(f)
        except FileNotFoundError:
            raise DataError(f"no fleet artifact at {path} ({HEADER} missing)") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{HEADER} at {path} is not valid JSON: {e}") from None
        if not isinstance(h, dict) or h.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"unsupported fleet artifact at {path}")
        t = pq.read_table(os.path.join(path, TABLE)).to_pydict()
        names = h["param_names"]
        col = lambda n: np.asarray(t[n], float)  # noqa: E731
        art = cls(family=h["family"], key_names=h["key_names"], param_names=names,
                  keys=[np.asarray(t[n], dtype=object) for n in h["key_names"]],
                  params=np.column_stack([col(n) for n in names]),
                  se=np.column_stack([col(f"se_{n}") for n in names]),
                  n_obs=np.asarray(t["n_obs"], np.int64), loglik=col("loglik"),
                  status=np.asarray(t["status"], dtype=object),
                  source_version=np.asarray(t["source_version"], dtype=object),
                  pooled=h.get("pooled"), unknown_key=h.get("unknown_key", "reject"),
                  metadata=h.get("metadata", {}))
        art.check()
        if art.digests() != h.get("digests"):
            raise DataError(f"fleet artifact at {path}: its keys do not match the digests "
                            f"of its header (a table from another fleet?)")
        return art

    # --- lookup and scoring ---------------------------------------------------------------
    def positions(self, keys: list) -> np.ndarray:
        """Table row of each request row's key; -1 where it has no usable estimate (absent,
        not fitted, not converged). Never raises for an unknown key: the gate uses it."""
        import pandas as pd

        if len(keys) != len(self.key_names):
            raise DataError(f"this fleet is keyed by {self.key_names}: got {len(keys)} key "
                            f"column(s)")
        cols = [key_strings(k) for k in keys]
        if self._index is None:
            self._index = (pd.Index(self.keys[0]) if len(self.keys) == 1
                           else pd.MultiIndex.from_arrays(self.keys))
        probe = cols[0] if len(cols) == 1 else pd.MultiIndex.from_arrays(cols)
        at = np.asarray(self._index.get_indexer(probe), np.int64)
        ok = at >= 0
        ok[ok] = self.servable[at[ok]]
        return np.where(ok, at, -1)

    def rows_of(self, keys: list) -> np.ndarray:
        """Table row of each request row's key (-1: the pooled fit answers for it).

        ``keys``: one array of key values per key column, request rows long."""
        at = self.positions(keys)
        ok = at >= 0
        if not ok.all():
            if self.unknown_key == "pooled":
                return at
            cols = [key_strings(k) for k in keys]
            bad = list(dict.fromkeys(key_labels([c[~ok] for c in cols]).tolist()))
            why = {True: "has no usable estimate", False: "is not in this fleet"}
            first = bad[0]
            known = tuple(c[int(np.flatnonzero(~ok)[0])] for c in cols) in set(
                self.key_tuples())
            raise DataError(f"{len(bad)} unknown key(s) in {self.key_names}: "
                            f"{', '.join(map(repr, bad[:MAX_NAMED]))}"
                            f"{' ...' if len(bad) > MAX_NAMED else ''} ({first!r} "
                            f"{why[bool(known)]}; this fleet rejects unknown keys)")
        return at

    def row_params(self, at: np.ndarray) -> np.ndarray:
        """(n, k) parameter vector of each request row (pooled where ``at`` is -1)."""
        if (at < 0).any():
            pooled = np.array([self.pooled[n] for n in self.param_names], float)
            return np.where((at < 0)[:, None], pooled, self.params[np.maximum(at, 0)])
        return self.params[at]

    def loglik_rows(self, x, keys: list, *, event=None) -> np.ndarray:
        """Per-row log-likelihood of new rows under each row's key's model, in one kernel."""
        from mleops.fleet_kernel import keyed_loglik

        at = self.rows_of(keys)
        return keyed_loglik(self.family, self.row_params(at), x, event=event)


__all__ = ["FleetArtifact", "HEADER", "TABLE", "UNKNOWN_KEY", "key_labels", "key_strings"]
