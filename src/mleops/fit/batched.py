"""``fit_many``: N independent series of one family in a single jitted, vmapped call.

Ragged series are padded to a common length with a copy of their first value and weight 0,
so padding never changes a likelihood; validation runs once on the concatenation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mleops.errors import DataError
from mleops.families import Family
from mleops.fit.api import resolve_family
from mleops.fit.core import PROFILED, batch_kernel
from mleops.fit.data import Data, in_place, make_data, with_weights
from mleops.fit.sharded import pad_rows


@dataclass
class BatchFitResult:
    """Per-series estimates as arrays (row i = series i), with the same honesty as FitResult."""

    family: dict
    param_names: tuple[str, ...]
    params: np.ndarray  # (N, k)
    se: np.ndarray  # (N, k); inf where the information matrix is singular
    loglik: np.ndarray  # (N,)
    n_obs: np.ndarray  # (N,)
    iterations: np.ndarray
    grad_norm: np.ndarray
    converged: np.ndarray
    method: str
    cov: np.ndarray | None = None  # (N, k, k): inverse observed information per series

    def __len__(self) -> int:
        return self.params.shape[0]

    def series(self, i: int) -> dict:
        """Summary of series ``i`` (params/se keyed by name)."""
        return {"params": dict(zip(self.param_names, self.params[i].tolist())),
                "se": dict(zip(self.param_names, self.se[i].tolist())),
                "loglik": float(self.loglik[i]), "n_obs": int(self.n_obs[i]),
                "converged": bool(self.converged[i]), "iterations": int(self.iterations[i])}

    def to_dict(self) -> dict:
        return {"family": self.family, "param_names": list(self.param_names),
                "params": self.params.tolist(), "se": self.se.tolist(),
                "loglik": self.loglik.tolist(), "n_obs": self.n_obs.tolist(),
                "converged": self.converged.tolist(), "iterations": self.iterations.tolist(),
                "grad_norm": self.grad_norm.tolist(), "method": self.method}


def _pad(series: list[np.ndarray], fill_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in series])
    L = int(lengths.max())
    out = np.stack([pad_rows(np.asarray(s, np.float64), L, zero=not fill_first)
                    for s in series])
    mask = np.arange(L)[None, :] < lengths[:, None]
    return out, mask


def _as_series(data, what: str) -> list[np.ndarray]:
    if isinstance(data, np.ndarray) and data.ndim == 2:
        return list(data)
    try:
        series = [np.asarray(s) for s in data]
    except TypeError:
        raise DataError(f"{what}: expected a 2-D array or a list of 1-D series") from None
    if not series:
        raise DataError(f"{what}: no series given")
    for i, s in enumerate(series):
        if s.ndim != 1 or s.size == 0:
            raise DataError(f"{what}: series {i} must be a non-empty 1-D array, got shape {s.shape}")
    return series


def _validated(fam: Family, lens: list[int], x, host: bool = False, **arrays) -> Data:
    """``make_data`` on all series at once, its errors naming the series and the row in it
    (not the row of the concatenation)."""
    try:
        return make_data(fam, x, host=host, **arrays)
    except DataError as e:
        starts = np.concatenate([[0], np.cumsum(lens)])

        def where(m: re.Match) -> str:
            i = int(m.group(1))
            s = int(np.searchsorted(starts, i, side="right") - 1)
            return f"series {s}, row {i - int(starts[s])}"

        raise DataError(re.sub(r"\brow (\d+)", where, str(e))) from None


def _rectangular(data, weights, event) -> bool:
    two_d = lambda a: a is None or (hasattr(a, "ndim") and a.ndim == 2)  # noqa: E731
    return hasattr(data, "ndim") and data.ndim == 2 and two_d(weights) and two_d(event)


def _batch_data(fam: Family, data, weights, event) -> tuple[Data, np.ndarray]:
    """(N, L) Data with weight-0 padding, validated once on all values together; equal
    lengths stay on the host (:func:`_kernel` places them)."""
    if _rectangular(data, weights, event):  # equal lengths: no copies, no padding
        x = np.asarray(data)
        N, L = x.shape
        rav = lambda a: None if a is None else np.asarray(a).reshape(-1)  # noqa: E731
        d = _validated(fam, [L] * N, x.reshape(-1), host=True, weights=rav(weights),
                       event=rav(event))
        if weights is not None and (np.asarray(weights).sum(axis=1) <= 0).any():
            raise DataError("some series have zero total weight")
        shape = lambda a: None if a is None else a.reshape(N, L)  # noqa: E731
        return Data(shape(d.x), shape(d.w), kind=shape(d.kind)), np.full(N, L)
    series = _as_series(data, "data")
    lens = [len(s) for s in series]
    flat = lambda v, what: None if v is None else np.concatenate(  # noqa: E731
        [np.asarray(s, float).ravel() for s in _as_series(v, what)])
    flat_w, flat_e = flat(weights, "weights"), flat(event, "event")
    d_all = with_weights(_validated(fam, lens, np.concatenate([np.asarray(s).ravel()
                                                               for s in series]),
                                    weights=flat_w, event=flat_e))
    cuts = np.cumsum(lens)[:-1]
    x, mask = _pad(np.split(np.asarray(d_all.x), cuts))
    w = np.where(mask, _pad(np.split(np.asarray(d_all.w), cuts), False)[0], 0.0)
    if (w.sum(axis=1) <= 0).any():
        raise DataError(f"series {int(np.flatnonzero(w.sum(axis=1) <= 0)[0])} has zero total weight")
    kind = None
    if d_all.kind is not None:
        kind = jnp.asarray(_pad(np.split(np.asarray(d_all.kind), cuts), False)[0], jnp.int32)
    return Data(jnp.asarray(x), jnp.asarray(w), kind=kind), np.array(lens)


#: families whose kernel reads x in a pass or two, into which the join of :func:`in_place`'s
#: two pieces fuses (10,000 x 1,000 values, fit_many: Weibull 0.30 -> 0.235 s, gamma 0.112 ->
#: 0.096 s). Not every kernel: where x has many readers XLA repeats the join in each, slower
#: than the copy it saves (measured on a Weibull reading x twice: 0.29 against 0.25 s).
JOINED = frozenset({*PROFILED, "gamma"})


@partial(jax.jit, static_argnames=("fam", "shape", "method", "max_iter", "tol"))
def _joined_kernel(fam: Family, head, body, shape: tuple[int, int], method: str,
                   max_iter: int, tol: float):
    x = jnp.concatenate([head, body]).reshape(shape)
    return batch_kernel(fam, Data(x, None), method, max_iter, tol)


def _kernel(fam: Family, d: Data, method: str, max_iter: int, tol: float):
    """The batched fit, on the caller's buffer where it can be read in place."""
    if isinstance(d.x, np.ndarray) and d.w is None and d.kind is None and fam.name in JOINED:
        if (split := in_place(d.x)) is not None:
            return _joined_kernel(fam, *split, d.x.shape, method, max_iter, tol)
    # event codes are right-censoring only (fit_many takes no interval, truncation or design):
    # the family's censored kernel applies, as in fit() (Weibull 2,000 x 1,000 rows, 30%
    # censored: 2.04 -> 0.10 s warm)
    return batch_kernel(fam, jax.tree.map(jnp.asarray, d), method, max_iter, tol,
                        d.kind is not None)


def fit_many(data, family: str | dict | Family, *, weights=None, event=None,
             method: str = "newton", max_iter: int = 100, tol: float = 1e-12,
             **family_options) -> BatchFitResult:
    """Fit every series in ``data`` (2-D array or list of ragged 1-D arrays) independently.

    ``weights``/``event`` match ``data``'s layout. One compiled call fits all series; a
    series that does not converge is flagged in ``converged``, never silently kept.
    """
    fam = resolve_family(family, **family_options)
    if not fam.batchable:
        raise DataError(f"fit_many does not support family {fam.name}; use fit() per series")
    d, lens = _batch_data(fam, data, weights, event)
    out = jax.device_get(_kernel(fam, d, method, max_iter, tol))
    st, p = out.state, np.asarray(out.params)
    se = np.sqrt(np.diagonal(out.cov, axis1=1, axis2=2))
    se = np.where(np.isfinite(se), se, np.inf)
    f = np.asarray(st.f)
    conv = np.asarray(st.converged) & np.isfinite(f) & np.isfinite(p).all(axis=1)
    return BatchFitResult(fam.describe(), fam.param_names, p, se, f, lens,
                          np.asarray(st.it) + np.asarray(out.start_iterations),
                          np.linalg.norm(st.g, axis=1), conv, method, np.asarray(out.cov))
