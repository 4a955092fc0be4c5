"""Validated fitting data as a JAX pytree: values, weights, censoring, truncation, covariates.

Censoring codes (``kind``): 0 exact, 1 right-censored (value is a lower bound), 2 left-censored
(value is an upper bound), 3 interval-censored in (x, upper]. Truncation: a row can only have
been observed inside (trunc_lo, trunc_hi]. ``None`` fields are absent, which keeps the common
uncensored case on the cheapest compiled path (jit specialises on the pytree structure).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mleops.errors import DataError
from mleops.families import Family

EXACT, RIGHT, LEFT, INTERVAL = 0, 1, 2, 3


class Data(NamedTuple):
    x: jnp.ndarray
    w: jnp.ndarray
    X: jnp.ndarray | None = None
    kind: jnp.ndarray | None = None
    upper: jnp.ndarray | None = None
    trunc_lo: jnp.ndarray | None = None
    trunc_hi: jnp.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[-1])


def as_float_array(values, what: str) -> np.ndarray:
    """1-D float64 array or a DataError naming ``what`` and the problem."""
    try:
        a = np.asarray(values)
    except Exception as e:  # pragma: no cover - exotic containers
        raise DataError(f"{what}: cannot be read as an array ({e})") from None
    if a.dtype == bool:
        a = a.astype(np.float64)
    if a.dtype.kind not in "iuf":
        raise DataError(f"{what}: expected numbers, got dtype {a.dtype}"
                        + (f" (first value {a.ravel()[0].item()!r})" if a.size else ""))
    return np.asarray(a, dtype=np.float64)


def _check_finite(a: np.ndarray, what: str, allow_inf: bool = False) -> None:
    # One reduction decides the common case; the element-wise scan only runs to explain.
    total = a.sum()
    if np.isfinite(total) or (allow_inf and not np.isnan(total)):
        return
    bad = np.isnan(a) if allow_inf else ~np.isfinite(a)
    if not bad.any():
        return
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise DataError(f"{what}: {int(bad.sum())} non-finite value(s) (NaN/inf); "
                        f"first at row {i}: {a.ravel()[i].item()!r}")


#: XLA on CPU reads a host buffer in place only at this alignment
ALIGN = 64


def _shared(a: np.ndarray) -> jax.Array | None:
    """A device array over ``a``'s own buffer (dlpack), or None where it cannot be shared:
    not CPU, not C-contiguous float64 at a 64-byte boundary, read-only. ``jax.device_put``
    copies every host buffer, aligned or not (40-60 ms for 1e7 values, page faults
    included); the fits only read their data, synchronously, so sharing it is safe."""
    if (jax.default_backend() != "cpu" or a.dtype != np.float64 or not a.flags.c_contiguous
            or not a.flags.writeable or a.ctypes.data % ALIGN):
        return None
    try:
        return jnp.from_dlpack(a)
    except (BufferError, TypeError, RuntimeError):
        return None


def _to_device(a: np.ndarray):
    """Device array (a copy: see :func:`_shared`; sharing here crashed a pipeline's train
    process at exit, so only :func:`in_place`'s kernels share)."""
    return jax.device_put(np.ascontiguousarray(a))


def in_place(a: np.ndarray) -> tuple[np.ndarray, jax.Array] | None:
    """A C-contiguous float64 array as (head, body) for a kernel that concatenates them
    back: ``head`` the < 8 values before its first 64-byte boundary (numpy aligns to 16),
    ``body`` a device array over the caller's buffer from there on (:func:`_shared`); the
    concatenation fuses into the kernel's first pass. None where sharing is not possible."""
    if a.dtype != np.float64 or not a.flags.c_contiguous or a.ctypes.data % a.itemsize:
        return None
    flat = a.reshape(-1)
    k = (-flat.ctypes.data % ALIGN) // flat.itemsize
    body = _shared(flat[k:]) if k < flat.size else None
    return None if body is None else (flat[:k].copy(), body)


def with_weights(d: Data) -> Data:
    """Unit weights made explicit. Called inside jitted kernels, so XLA sees constant ones
    and simplifies ``w * x`` to ``x``: unweighted fits pay nothing for weight support."""
    return d if d.w is not None else d._replace(w=jnp.ones_like(d.x))


def make_data(family: Family, x, *, weights=None, event=None, kind=None, upper=None,
              truncation=None, X=None, host: bool = False) -> Data:
    """Validate raw arrays for ``family``; every problem raises ``DataError`` naming it.

    ``event`` follows the survival convention (1 observed, 0 right-censored); ``kind`` gives
    full control (codes above). ``truncation`` is ``(lo, hi)``, scalars or per-row arrays.
    ``host``: leave the values (x, weights, covariates) on the host for the caller to place.
    """
    x = as_float_array(x, "data")
    if x.ndim != 1:
        raise DataError(f"data: expected a 1-D column of values, got shape {x.shape}")
    n = x.shape[0]
    if n == 0:
        raise DataError("data: no rows to fit (empty input)")
    _check_finite(x, "data")
    w = None if weights is None else as_float_array(weights, "weights")
    if w is not None and w.shape != (n,):
        raise DataError(f"weights: expected shape ({n},), got {w.shape}")
    if w is not None:
        _check_finite(w, "weights")
        if w.min() < 0 or w.sum() <= 0:
            raise DataError("weights: must be >= 0 with a positive sum")
    codes = None
    if event is not None and kind is not None:
        raise DataError("give either event (0/1) or kind (censoring codes), not both")
    if event is not None:
        e = as_float_array(event, "event")
        if e.shape != (n,):
            raise DataError(f"event: expected shape ({n},), got {e.shape}")
        if not np.isin(e, (0.0, 1.0)).all():
            i = int(np.flatnonzero(~np.isin(e, (0.0, 1.0)))[0])
            raise DataError(f"event/censor column must be 0 (censored) or 1 (observed); "
                            f"row {i} has {e[i].item()!r}")
        codes = np.where(e == 1, EXACT, RIGHT)
    if kind is not None:
        codes = as_float_array(kind, "kind")
        if codes.shape != (n,) or not np.isin(codes, (0, 1, 2, 3)).all():
            raise DataError("kind: expected one code per row in {0,1,2,3}")
    up = None
    if codes is not None and (codes == INTERVAL).any():
        if upper is None:
            raise DataError("interval-censored rows need an upper bound (upper=...)")
        up = as_float_array(upper, "upper")
        _check_finite(up, "upper", allow_inf=True)
        if up.shape != (n,) or (up[codes == INTERVAL] <= x[codes == INTERVAL]).any():
            raise DataError("upper: must have one value per row, above x on interval rows")
    msg = family.check_support(x)
    if msg:
        raise DataError(msg)
    if family.uses_covariates:
        if X is None:
            raise DataError(f"family {family.name} needs covariates (a design matrix)")
        X = np.asarray(X, dtype=np.float64)
        if X.shape != (n, len(family.features)):
            raise DataError(f"covariates: expected shape ({n}, {len(family.features)}), got {X.shape}")
        _check_finite(X, "covariates")
    elif X is not None:
        raise DataError(f"family {family.name} takes no covariates")
    tlo = thi = None
    if truncation is not None:
        lo, hi = truncation
        tlo = np.broadcast_to(as_float_array(-np.inf if lo is None else lo, "truncation lower"), (n,))
        thi = np.broadcast_to(as_float_array(np.inf if hi is None else hi, "truncation upper"), (n,))
        _check_finite(tlo, "truncation lower", allow_inf=True)
        _check_finite(thi, "truncation upper", allow_inf=True)
        outside = (x <= tlo) | (x > thi) if family.discrete else (x < tlo) | (x > thi)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise DataError(f"row {i} value {x[i].item()!r} lies outside its truncation bounds")
        tlo, thi = jnp.asarray(tlo), jnp.asarray(thi)
    place = (lambda a: a) if host else _to_device  # noqa: E731
    return Data(place(x), None if w is None else place(w), None if X is None else place(X),
                None if codes is None else jnp.asarray(codes, jnp.int32),
                None if up is None else jnp.asarray(up), tlo, thi)
