"""``fit_fleet``: thousands of keyed models of one family, fitted in a handful of calls.

The rows are grouped by key once (factorised key codes, one stable argsort, no Python loop
over rows) and validated once on the whole table. Keys are then bucketed by row count into
powers of two and each bucket is fitted by :func:`fit_many` as one rectangular batch, padded
with weight-0 copies of each key's first row (padding never changes a likelihood). The
number of keys in a batch is a power of two too, so the number of distinct compiled shapes
is O(log max rows x log keys), never one per key.
"""

from __future__ import annotations

import numpy as np

from mleops.errors import DataError
from mleops.families import Family, get_family
from mleops.fit.api import resolve_family
from mleops.fit.batched import fit_many
from mleops.fit.boundary import LIMIT_RTOL
from mleops.fit.data import make_data
from mleops.fit.fleet_result import CONVERGED, NOT_CONVERGED, TOO_FEW, FleetResult

#: values (series x length) per fit_many call at most; bounds memory on huge fleets
MAX_CELLS = 1 << 22
#: the shortest padded length (keys of 1..8 rows share one shape)
MIN_LENGTH = 8
#: fit() options a fleet cannot take (fit_many has no such argument)
REFUSED = ("kind", "upper", "truncation", "X", "covariates", "sharded", "n_starts", "seed")


def _table(data) -> tuple[list[str], int, callable]:
    """(column names, rows, column getter) of a DataFrame, an Arrow Table or a dict."""
    if hasattr(data, "column_names") and hasattr(data, "num_rows"):  # pyarrow Table
        def get(name):
            col = data.column(name)
            return col.to_numpy() if col.null_count == 0 else np.asarray(col.to_pylist(),
                                                                           dtype=object)
        return list(data.column_names), int(data.num_rows), get
    if hasattr(data, "columns") and hasattr(data, "iloc"):  # pandas DataFrame
        return [str(c) for c in data.columns], len(data), lambda n: data[n].to_numpy()
    if isinstance(data, dict):
        lens = {len(np.asarray(v)) for v in data.values()}
        if len(lens) > 1:
            raise DataError(f"data: columns of different lengths {sorted(lens)}")
        return list(data), (lens.pop() if lens else 0), lambda n: np.asarray(data[n])
    if isinstance(data, str) or hasattr(data, "__fspath__"):
        raise DataError("fit_fleet takes a DataFrame, an Arrow Table or a dict of columns; "
                        "read a file first (mleops.io.read_table, or `mleops fit --key-column`)")
    raise DataError(f"fit_fleet: expected a pandas DataFrame, a pyarrow Table or a dict of "
                    f"columns, got {type(data).__name__}")


def _numeric(get, name: str, what: str) -> np.ndarray:
    a = np.asarray(get(name))
    if a.dtype == object:
        try:
            a = a.astype(np.float64)  # None -> nan: make_data then names the row
        except (TypeError, ValueError):
            raise DataError(f"{what} column {name!r}: expected numbers, got "
                            f"{type(a[0]).__name__} values") from None
    return a


def _key_codes(get, names: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One int64 code per row, ordered like the keys (lexicographically), and per key
    column its codes and sorted unique values. Null keys -> DataError."""
    import pandas as pd

    code, parts = None, []
    for name in names:
        col = get(name)
        try:
            c, uniq = pd.factorize(col, sort=True)
        except TypeError:  # unorderable mixed values: keep first-seen order
            c, uniq = pd.factorize(col, sort=False)
        if (bad := c < 0).any():
            raise DataError(f"key column {name!r}: {int(bad.sum())} null key(s), first at "
                            f"row {int(np.flatnonzero(bad)[0])}; drop or fill them first")
        uniq = np.asarray(uniq)
        parts.append((c, uniq))
        c = c.astype(np.int64)
        if code is None:
            code = c
        else:
            if len(uniq) and int(code.max()) + 1 > (1 << 62) // len(uniq):
                code = np.unique(code, return_inverse=True)[1].astype(np.int64)
            code = code * len(uniq) + c
    return code, parts


def _pow2(n: np.ndarray | int):
    return 1 << np.maximum(np.ceil(np.log2(np.maximum(n, 1))), 0).astype(int)


def _batches(starts, counts, fit_idx):
    """(key positions, padded length, padded series) per fit_many call."""
    lengths = np.maximum(_pow2(counts[fit_idx]), MIN_LENGTH)
    for L in np.unique(lengths):
        keys = fit_idx[lengths == L]
        per = max(1, MAX_CELLS // int(L))
        for lo in range(0, len(keys), per):
            chunk = keys[lo:lo + per]
            yield chunk, int(L), int(min(_pow2(len(chunk)), per))


def _fit_batches(fam: Family, xs, ws, es, starts, counts, fit_idx, method, max_iter, tol):
    K, k = len(counts), fam.n_params
    out = {"p": np.full((K, k), np.nan), "se": np.full((K, k), np.nan),
           "cov": np.full((K, k, k), np.nan), "g": np.full(K, np.nan),
           "ll": np.full(K, np.nan), "conv": np.zeros(K, bool), "it": np.full(K, -1)}
    shapes = []
    for chunk, L, N in _batches(starts, counts, fit_idx):
        rows = np.concatenate([chunk, np.repeat(chunk[:1], N - len(chunk))])  # pad: copies
        j = np.arange(L)[None, :]
        inside = j < counts[rows][:, None]
        idx = starts[rows][:, None] + np.where(inside, j, 0)
        w = np.where(inside, ws[idx], 0.0)
        e = None if es is None else np.where(inside, es[idx], 1.0)
        r = fit_many(xs[idx], fam, weights=w, event=e, method=method, max_iter=max_iter,
                     tol=tol)
        n = len(chunk)
        out["p"][chunk], out["se"][chunk], out["ll"][chunk] = r.params[:n], r.se[:n], r.loglik[:n]
        out["conv"][chunk], out["it"][chunk] = r.converged[:n], r.iterations[:n]
        out["g"][chunk] = r.grad_norm[:n]
        if r.cov is not None:
            out["cov"][chunk] = r.cov[:n]
        shapes.append((N, L))
    return out, tuple(shapes)


def _pre_status(fam: Family, xs, ws, es, starts, counts, min_rows: int) -> np.ndarray:
    """Keys that cannot be fitted, found from per-key sums (reduceat over sorted rows)."""
    status = np.full(len(counts), "", dtype=object)
    wsum = np.add.reduceat(ws, starts)
    status[wsum <= 0] = "zero total weight"
    if es is not None:
        observed = np.add.reduceat(np.where(ws > 0, es, 0.0), starts)
        status[observed <= 0] = "no observed events"
    if not fam.discrete and fam.n_params >= 2:  # check_spread's rule, per key
        big = np.where(ws > 0, xs, -np.inf)
        small = np.where(ws > 0, xs, np.inf)
        same = np.maximum.reduceat(big, starts) == np.minimum.reduceat(small, starts)
        if es is not None:
            same &= np.add.reduceat(1.0 - es, starts) == 0  # censored rows: let the fit say
        status[same & (wsum > 0)] = "all values equal"
    status[counts < min_rows] = TOO_FEW
    return status


def _distinct(code: np.ndarray, xs, ws, es):
    """One row per distinct (key, value, event) with the summed weight: the same weighted
    log-likelihood, score and information (weights are frequencies), a fraction of the rows
    for a count family (1,000 counts of one key take some 60 distinct values)."""
    e = np.zeros_like(xs) if es is None else es
    order = np.lexsort((e, xs, code))  # rows are sorted by key already: stable within it
    c, x, e, w = code[order], xs[order], e[order], ws[order]
    new = np.r_[True, (c[1:] != c[:-1]) | (x[1:] != x[:-1]) | (e[1:] != e[:-1])]
    at = np.flatnonzero(new)
    w = np.add.reduceat(w, at)
    c, x, e = c[at], x[at], e[at]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    counts = np.diff(np.r_[starts, c.size])
    return (np.ascontiguousarray(x), w, None if es is None else e, starts, counts)


def _boundary(fam: Family, res: dict, args, fitted, status) -> None:
    """Limit families (Student t -> normal, negbinom -> Poisson): a key whose limit fits as
    well is on the boundary, reported so with the limit's log-likelihood, as ``fit`` does."""
    lim = get_family(fam.limit_family, **fam.limit_options())
    lres, _ = _fit_batches(lim, *args)
    ll, lll = res["ll"][fitted], lres["ll"][fitted]
    ran = np.array([fam.at_limit(p) for p in res["p"][fitted]], bool)
    hit = ran | (np.isfinite(lll) & (lll >= ll - LIMIT_RTOL * (1.0 + np.abs(ll))))
    at = fitted[hit]
    status[at] = f"boundary: the {lim.name} limit fits as well; use {lim.name}"
    res["ll"][at] = lres["ll"][at]
    res["conv"][at] = False


def fit_fleet(data, family: str | dict | Family, *, key: str | list[str], column=None,
              event=None, weights=None, min_rows: int | None = None, method: str = "newton",
              max_iter: int = 100, tol: float = 1e-12, **options) -> FleetResult:
    """Fit ``family`` to the ``column`` values of every ``key`` in ``data`` (a pandas
    DataFrame, a pyarrow Table or a dict of columns).

    ``key``: a column name or a list of them (composite keys). ``event``/``weights``: column
    names (1 observed / 0 right-censored; observation weights). Keys with fewer than
    ``min_rows`` rows (default: parameters + 2) are not fitted (status ``"too few rows"``).
    Family options (``threshold``, ``k``) as in :func:`fit_many`; anything else fit() takes
    (truncation, covariates, ...) raises ``DataError``.
    """
    if bad := [o for o in options if o not in ("threshold", "k", "features")]:
        why = "" if not set(bad) & set(REFUSED) else " (fit_many has no such input)"
        raise DataError(f"fit_fleet does not support {', '.join(sorted(bad))}{why}; "
                        "fit such keys one by one with mleops.fit")
    fam = resolve_family(family, **options)
    if not fam.batchable:
        raise DataError(f"fit_fleet does not support family {fam.name} (it cannot be fitted "
                        "in a batch); fit its keys one by one with mleops.fit")
    if method not in ("newton", "lbfgs"):
        raise DataError(f"method must be newton or lbfgs, not {method!r}")
    names, n, get = _table(data)
    keys = [key] if isinstance(key, str) else list(key or [])
    if not keys:
        raise DataError("fit_fleet: no key column given (key=...)")
    roles = {"key": keys, "event": [event] if event else [], "weights": [weights] if weights else []}
    if column is not None:
        roles["value"] = [column]
    for role, cols in roles.items():
        if missing := [c for c in cols if c not in names]:
            raise DataError(f"{role} column {missing[0]!r} not in the data (columns: "
                            f"{', '.join(names)})")
    if column is None:
        left = [c for c in names if c not in {*keys, event, weights}]
        if len(left) != 1:
            raise DataError(f"say which column to fit (column=...): {len(left)} candidates "
                            f"{left[:10]}")
        column = left[0]
    if n == 0:
        raise DataError("fit_fleet: the data has no rows")
    x = _numeric(get, column, "value")
    w = None if weights is None else _numeric(get, weights, "weights")
    e = None if event is None else _numeric(get, event, "event")
    make_data(fam, x, weights=w, event=e, host=True)  # once, naming the table's row
    code, parts = _key_codes(get, keys)
    order = np.argsort(code, kind="stable")
    sc = code[order]
    starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
    counts = np.diff(np.r_[starts, n])
    first = order[starts]
    key_values = tuple(uniq[c[first]] for c, uniq in parts)
    xs = np.ascontiguousarray(x[order], dtype=np.float64)
    ws = np.ones(n) if w is None else np.asarray(w, np.float64)[order]
    es = None if e is None else np.asarray(e, np.float64)[order]
    min_rows = fam.n_params + 2 if min_rows is None else int(min_rows)
    status = _pre_status(fam, xs, ws, es, starts, counts, min_rows)
    fitted = np.flatnonzero(status == "")
    fit_counts = counts
    if fam.discrete:  # counts repeat: each key's distinct (value, event) rows, weights summed
        xs, ws, es, starts, fit_counts = _distinct(sc, xs, ws, es)
    args = (xs, ws, es, starts, fit_counts, fitted, method, max_iter, tol)
    res, shapes = _fit_batches(fam, *args)
    finite = np.isfinite(res["ll"]) & np.isfinite(res["p"]).all(axis=1)
    status[fitted] = np.where(res["conv"][fitted], CONVERGED, NOT_CONVERGED)
    bad = fitted[~finite[fitted]]
    status[bad] = "failed: non-finite log-likelihood or parameters"
    res["p"][bad], res["se"][bad], res["ll"][bad], res["cov"][bad] = np.nan, np.nan, np.nan, np.nan
    ok = fitted[finite[fitted]]
    if fam.limit_family and len(ok):
        _boundary(fam, res, args[:5] + (ok,) + args[6:], ok, status)
    return FleetResult(fam.describe(), tuple(keys), key_values, fam.param_names, res["p"],
                       res["se"], res["ll"], counts, res["conv"], status.astype(str),
                       res["it"], method, shapes, res["cov"], res["g"])


__all__ = ["fit_fleet", "MAX_CELLS", "MIN_LENGTH"]
