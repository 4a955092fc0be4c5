"""``FleetResult``: one fleet's fits as a table (one row per key), never N result objects.

Arrays are stored row-aligned with ``key_values`` (keys sorted); the pandas and Arrow views
are built on demand, so importing this module loads neither library.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

CONVERGED, NOT_CONVERGED, TOO_FEW = "converged", "not converged", "too few rows"


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


@dataclass
class FleetResult:
    """Per-key estimates of one family. ``status`` says, for every key, what happened:
    ``"converged"``, ``"not converged"``, ``"too few rows"`` (not fitted), or why a key has
    no MLE (``"no observed events"``, ``"all values equal"``, ``"zero total weight"``,
    ``"boundary: ..."``, ``"failed: ..."``). Keys that were not fitted have NaN estimates
    and say so in ``status``; no NaN goes unexplained."""

    family: dict
    key_names: tuple[str, ...]
    key_values: tuple[np.ndarray, ...]  # one array per key column, one entry per key
    param_names: tuple[str, ...]
    param_array: np.ndarray  # (K, k)
    se_array: np.ndarray  # (K, k); inf where the information matrix is singular
    loglik_array: np.ndarray  # (K,)
    n_obs_array: np.ndarray  # (K,) rows of each key
    converged_array: np.ndarray  # (K,) bool
    status_array: np.ndarray  # (K,) str
    iterations: np.ndarray  # (K,) -1 where not fitted
    method: str
    #: (series, length) of every padded batch fitted: O(log max rows) distinct lengths
    shapes: tuple[tuple[int, int], ...] = ()
    cov_array: np.ndarray | None = None  # (K, k, k): inverse observed information per key
    grad_norm_array: np.ndarray | None = None  # (K,) at the estimate
    _index: dict = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.loglik_array.shape[0])

    @property
    def keys(self):
        """The keys as a pandas Index (a MultiIndex of tuples for a composite key)."""
        import pandas as pd

        if len(self.key_names) == 1:
            return pd.Index(self.key_values[0], name=self.key_names[0])
        return pd.MultiIndex.from_arrays(list(self.key_values), names=list(self.key_names))

    def _frame(self, a: np.ndarray):
        import pandas as pd

        return pd.DataFrame(a, index=self.keys, columns=list(self.param_names))

    def _series(self, a: np.ndarray, name: str):
        import pandas as pd

        return pd.Series(a, index=self.keys, name=name)

    @property
    def params(self):
        return self._frame(self.param_array)

    @property
    def se(self):
        return self._frame(self.se_array)

    @property
    def loglik(self):
        return self._series(self.loglik_array, "loglik")

    @property
    def n_obs(self):
        return self._series(self.n_obs_array, "n_obs")

    @property
    def converged(self):
        return self._series(self.converged_array, "converged")

    @property
    def status(self):
        return self._series(self.status_array, "status")

    def key_list(self) -> list:
        """Keys as Python values (tuples for a composite key), in row order."""
        cols = [np.asarray(v).tolist() for v in self.key_values]
        return cols[0] if len(cols) == 1 else list(zip(*cols))

    def position(self, key) -> int:
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self.key_list())}
        k = tuple(key) if isinstance(key, list) else key
        if len(self.key_names) == 1 and isinstance(k, tuple) and len(k) == 1:
            k = k[0]
        try:
            return self._index[k]
        except (KeyError, TypeError):
            raise KeyError(f"no key {key!r} in this fleet ({len(self)} keys)") from None

    def row(self, i: int) -> dict:
        """Summary of row ``i``: key, status, params/se by name, loglik, n_obs, converged."""
        keys = [_plain(np.asarray(v)[i]) for v in self.key_values]
        return {"key": keys[0] if len(keys) == 1 else tuple(keys),
                "status": str(self.status_array[i]),
                "params": dict(zip(self.param_names, self.param_array[i].tolist())),
                "se": dict(zip(self.param_names, self.se_array[i].tolist())),
                "loglik": float(self.loglik_array[i]), "n_obs": int(self.n_obs_array[i]),
                "converged": bool(self.converged_array[i]),
                "iterations": int(self.iterations[i])}

    def __getitem__(self, key):
        """Key ``key``'s fit as a :class:`~mleops.fit.result.FitResult` (``message`` its
        status, ``boundary`` set where it has no interior MLE, ``extra["key"]``)."""
        return self.fit_result(self.position(key))

    def fit_result(self, i: int):
        """Row ``i`` as a FitResult, as honest as a single fit: a key not fitted has NaN
        estimates, ``converged`` False and its reason in ``message``."""
        from mleops.fit.result import FitResult

        r, k = self.row(i), len(self.param_names)
        cov = (np.full((k, k), np.nan) if self.cov_array is None
               else np.array(self.cov_array[i]))
        status = r["status"]
        return FitResult(
            family=self.family, param_names=self.param_names, params=r["params"],
            se=r["se"], cov=cov, loglik=r["loglik"], n_obs=r["n_obs"], n_params=k,
            iterations=r["iterations"],
            grad_norm=(float("nan") if self.grad_norm_array is None
                       else float(self.grad_norm_array[i])),
            converged=r["converged"] and status == CONVERGED, method=self.method,
            message=status, boundary=status if status.startswith("boundary") else "",
            extra={"key": r["key"], "status": status})

    def __contains__(self, key) -> bool:
        try:
            self.position(key)
        except KeyError:
            return False
        return True

    def status_counts(self) -> dict[str, int]:
        return dict(Counter(self.status_array.tolist()).most_common())

    def to_table(self):
        """pyarrow Table: key columns, params, ``se_<param>``, loglik, n_obs, converged,
        status, iterations."""
        import pyarrow as pa

        cols = {n: pa.array(np.asarray(v).tolist()) for n, v in zip(self.key_names,
                                                                   self.key_values)}
        for j, n in enumerate(self.param_names):
            cols[n] = pa.array(self.param_array[:, j])
        for j, n in enumerate(self.param_names):
            cols[f"se_{n}"] = pa.array(self.se_array[:, j])
        cols.update(loglik=pa.array(self.loglik_array), n_obs=pa.array(self.n_obs_array),
                    converged=pa.array(self.converged_array),
                    status=pa.array(self.status_array.tolist(), pa.string()),
                    iterations=pa.array(self.iterations))
        return pa.table(cols)

    def to_dict(self, rows: int | None = None) -> dict:
        """JSON-ready: family, key names, status counts and the first ``rows`` rows (all
        when None); non-finite numbers become None."""
        def clean(v):
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, tuple):
                return list(v)
            return None if isinstance(v, float) and not np.isfinite(v) else v

        n = len(self) if rows is None else min(rows, len(self))
        return {"family": self.family["name"], "family_options": self.family,
                "keys": list(self.key_names), "n_keys": len(self),
                "status_counts": self.status_counts(), "method": self.method,
                "rows": [clean(self.row(i)) for i in range(n)]}

    def summary(self, first: int = 10) -> str:
        counts = ", ".join(f"{s}: {c}" for s, c in self.status_counts().items())
        lines = [f"family: {self.family['name']}  keys={len(self)} "
                 f"({', '.join(self.key_names)})  method={self.method}",
                 f"status: {counts}",
                 f"{'key':<24}{'status':<18}{'n_obs':>8}"
                 + "".join(f"{n:>14}" for n in self.param_names) + f"{'loglik':>16}"]
        for i in range(min(first, len(self))):
            r = self.row(i)
            key = r["key"] if not isinstance(r["key"], tuple) else "/".join(map(str, r["key"]))
            lines.append(f"{str(key)[:23]:<24}{r['status'][:17]:<18}{r['n_obs']:>8}"
                         + "".join(f"{v:>14.6g}" for v in r["params"].values())
                         + f"{r['loglik']:>16.6f}")
        if len(self) > first:
            lines.append(f"... {len(self) - first} more keys")
        return "\n".join(lines)


__all__ = ["FleetResult", "CONVERGED", "NOT_CONVERGED", "TOO_FEW"]
