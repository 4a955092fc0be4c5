"""One compiled kernel scoring rows of many keys: each row under its own parameter vector.

The vmap runs over rows, each with the parameters its key gathered, through the same
``row_loglik`` a single model uses (so a fleet's key and that key fitted alone agree to the
last bit). Rows are padded to a power of two, as for one model: a server compiles a handful
of shapes, not one per request size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mleops.errors import DataError
from mleops.families import Family, get_family
from mleops.fit.data import make_data
from mleops.fit.likelihood import row_loglik
from mleops.fit.sharded import pad_rows


def _per_row(fam: Family, p: jax.Array, d) -> jax.Array:
    return jax.vmap(lambda pi, di: row_loglik(fam, pi, di))(p, d)


def _cdf_per_row(fam: Family, p: jax.Array, x: jax.Array) -> jax.Array:
    return jax.vmap(lambda pi, xi: fam.cdf(xi, pi, None))(p, x)


def _ppf_per_row(fam: Family, p: jax.Array, q: jax.Array) -> jax.Array:
    return jax.vmap(lambda pi: fam.ppf(q, pi))(p)


_kernel = jax.jit(_per_row, static_argnums=0)
_cdf_kernel = jax.jit(_cdf_per_row, static_argnums=0)
_ppf_kernel = jax.jit(_ppf_per_row, static_argnums=0)


def _family(family: dict | Family) -> Family:
    return family if isinstance(family, Family) else get_family(family)


def _bucket(n: int) -> int:
    """Rows padded to a power of two (at least 16): a handful of compiled shapes."""
    return max(16, 1 << (n - 1).bit_length())


def keyed_cdf(family: dict | Family, params: np.ndarray, x) -> np.ndarray:
    """CDF of row i of ``x`` under natural parameters ``params[i]`` (no validation: the
    caller scored or validated the rows)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0)
    size = _bucket(n)
    out = _cdf_kernel(_family(family), jnp.asarray(pad_rows(np.asarray(params, np.float64),
                                                            size)),
                      jnp.asarray(pad_rows(x, size)))
    return np.asarray(out)[:n]


def keyed_ppf(family: dict | Family, params: np.ndarray, levels) -> np.ndarray:
    """(n, levels) quantiles of each row's model (row i: natural parameters ``params[i]``)."""
    n = params.shape[0]
    out = _ppf_kernel(_family(family),
                      jnp.asarray(pad_rows(np.asarray(params, np.float64), _bucket(n))),
                      jnp.asarray(np.asarray(levels, np.float64)))
    return np.asarray(out)[:n]


def keyed_loglik(family: dict | Family, params: np.ndarray, x, *, event=None) -> np.ndarray:
    """Log-likelihood of row i of ``x`` under natural parameters ``params[i]``."""
    fam = _family(family)
    x = np.asarray(x)
    n = x.shape[0] if x.ndim else 0
    if params.shape[0] != n:
        raise DataError(f"{n} rows but {params.shape[0]} parameter vectors")
    if n == 0:
        return np.zeros(0)
    size = _bucket(n)
    pad = lambda a: None if a is None else pad_rows(np.asarray(a), size)  # noqa: E731
    try:
        d = make_data(fam, pad(x), event=pad(event))
    except DataError:  # report on the caller's rows, not the padding copies
        make_data(fam, x, event=event)
        raise
    return np.asarray(_kernel(fam, jnp.asarray(pad(params), jnp.float64), d))[:n]


__all__ = ["keyed_cdf", "keyed_loglik", "keyed_ppf"]
