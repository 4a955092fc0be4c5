"""``fit``: one data set -> FitResult. Validates, picks the solver, reports convergence."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mleops.errors import ConvergenceWarning, DataError, FitError
from mleops.families import Family, get_family
from mleops.fit.boundary import check_spread, with_boundary
from mleops.fit.censored import GATHERED, censored_index
from mleops.fit.core import KernelOut, fit_kernel, from_sums, multistart_kernel, polish_kernel
from mleops.fit.data import EXACT, RIGHT, Data, make_data, with_weights
from mleops.fit.design import standardise, to_user_scale
from mleops.fit.fast import uses_suffstats
from mleops.fit.result import FitResult
from mleops.fit.sharded import shard_data
from mleops.fit.suffstats import SELF_CHECKING, shift_of, sums, sums_in_place


def resolve_family(family: str | dict | Family, *, threshold=None, k=None, features=None) -> Family:
    opts: dict[str, Any] = {}
    if threshold is not None:
        opts["threshold"] = float(threshold)
    if k is not None:
        opts["k"] = int(k)
    if features is not None:
        opts["features"] = tuple(features)
    return get_family(family, **opts)


def _modeled(fam: Family, x, others: dict):
    """Keep the rows the family models (peaks over threshold: exceedances); others alike."""
    xa = np.asarray(x)
    if xa.dtype.kind not in "iuf":
        return x, others, {}
    xa = np.asarray(xa, dtype=np.float64)  # no copy for float64 input
    if (keep := fam.modeled_rows(xa)) is None:
        return xa, others, {}
    if not keep.any():
        raise DataError(f"no values above the threshold {fam.threshold}: nothing to fit")
    others = {k: (np.asarray(v)[keep] if v is not None and np.shape(v)[:1] == xa.shape else v)
              for k, v in others.items()}
    return xa[keep], others, {"threshold": fam.threshold,
                                            "n_exceedances": int(keep.sum()),
                                            "n_below_threshold": int((~keep).sum())}


def fit(x, family: str | dict | Family, *, weights=None, event=None, kind=None, upper=None,
        truncation=None, X=None, features=None, threshold=None, k=None,
        method: str = "auto", n_starts: int = 8, seed: int = 0, max_iter: int = 100,
        tol: float = 1e-12, sharded: bool = False) -> FitResult:
    """Maximum-likelihood fit of ``family`` to ``x``.

    Censoring: ``event`` (1 observed / 0 right-censored) or ``kind`` codes with ``upper``;
    ``truncation=(lo, hi)``. Regression families take a design matrix ``X`` whose columns are
    named by ``features`` (first ``const``). ``sharded=True`` spreads rows over all visible
    devices. Raises ``DataError`` on bad input and ``FitError`` instead of returning NaN.
    """
    fam = resolve_family(family, threshold=threshold, k=k, features=features)
    plain = all(a is None for a in (weights, event, kind, upper, truncation, X))
    if plain and not sharded and method in ("auto", "newton") and fam.name in SELF_CHECKING:
        if (fast := _sums_first(fam, x, max_iter, tol)) is not None:
            return fast
    arrays = {"weights": weights, "event": event, "kind": kind, "upper": upper, "X": X}
    x, arrays, extra = _modeled(fam, x, arrays)
    weights, event, kind, upper, X = (arrays[n] for n in ("weights", "event", "kind", "upper", "X"))
    d = make_data(fam, x, weights=weights, event=event, kind=kind, upper=upper,
                  truncation=truncation, X=X)
    xs = np.asarray(x, dtype=np.float64)  # validated; no copy for float64 input
    codes = None if d.kind is None else np.asarray(d.kind)
    check_spread(fam, xs, None if d.w is None else np.asarray(d.w),
                 exact=codes is None or not codes.any())
    right_only = bool(codes is not None and codes.max() <= RIGHT and d.trunc_lo is None
                      and d.X is None)
    if right_only and not (codes == EXACT).any():
        raise DataError(f"no observed events: all {codes.size} rows are right-censored, so "
                        "the likelihood keeps rising as the scale grows and no MLE exists")
    n_rows = d.n
    M = None
    if d.X is not None:  # fit on a standard scale: badly scaled columns stall Newton
        Z, M = standardise(np.asarray(d.X))
        d = d._replace(X=jnp.asarray(Z))
    if sharded:
        d = shard_data(d)
    if method == "auto":
        method = "newton" if fam.n_params <= 40 else "lbfgs"
    if method not in ("newton", "lbfgs"):
        raise ValueError(f"method must be auto, newton or lbfgs, not {method!r}")
    if fam.multistart:
        out, it_starts = _multistart(fam, d, n_starts, seed, method, max(max_iter, 200), tol)
    elif method == "newton" and uses_suffstats(fam, d):  # the sums outside the kernel
        v0 = shift_of(fam.name, xs[:1])
        out = from_sums(fam, sums(fam.name, d.x, d.w, v0), v0, max_iter, tol)
        it_starts = 0
    else:
        gather = right_only and not sharded and fam.name in GATHERED
        idx = censored_index(codes) if gather else None
        out, it_starts = fit_kernel(fam, d, method, max_iter, tol, right_only, idx), 0
    result = _result(fam, d, out, method, n_rows, extra, it_starts)
    if M is not None:
        result = to_user_scale(result, M)
    limit = lambda lim: fit(x, lim, **arrays, truncation=truncation, method=method,  # noqa: E731
                            max_iter=max_iter, tol=tol)
    return with_boundary(fam, result, xs, None if X is None else np.asarray(X), limit)


def _sums_first(fam: Family, x, max_iter: int, tol: float) -> FitResult | None:
    """The exact-data fit of a family whose sums check its data (``SELF_CHECKING``): the
    sums straight from the caller's buffer, the checks only if a sum is not finite. None:
    take the general path (which then names what is wrong with the data)."""
    xs = x if isinstance(x, np.ndarray) else None
    if xs is None or xs.dtype != np.float64 or xs.ndim != 1 or xs.size < 2:
        return None
    v0 = shift_of(fam.name, xs[:1])
    s = sums_in_place(fam.name, xs, v0)
    if not np.isfinite(s).all():
        return None
    check_spread(fam, xs, None, exact=True)
    out = from_sums(fam, s, v0, max_iter, tol)
    result = _result(fam, Data(xs, None), out, "newton", xs.size, {}, 0)
    return with_boundary(fam, result, xs, None, lambda lim: fit(xs, lim, max_iter=max_iter,
                                                                 tol=tol))


def _multistart(fam, d: Data, n_starts: int, seed: int, method, max_iter, tol):
    """Deterministic start plus random ones (locs drawn from the data, scales jittered)."""
    d = with_weights(d)
    p0 = fam.init(d.x, d.w)
    th0 = fam.to_unconstrained(p0)
    key = jax.random.PRNGKey(seed)
    k1, k2 = jax.random.split(key)
    idx = jax.random.choice(k1, d.x.shape[0], (n_starts - 1, fam.k), p=d.w / jnp.sum(d.w))
    locs = d.x[idx]
    jit = jax.random.normal(k2, (n_starts - 1, 2 * fam.k - 1)) * 0.5
    rand = jnp.concatenate([jit[:, : fam.k - 1], locs, th0[None, 2 * fam.k - 1:]
                            + jit[:, fam.k - 1:]], axis=1)
    thetas = jnp.concatenate([th0[None], rand])
    states = multistart_kernel(fam, d, thetas, method, max_iter, tol)
    f = np.where(np.isfinite(np.asarray(states.f)), np.asarray(states.f), -np.inf)
    # the best *non-degenerate* optimum: a collapsed component has an unbounded likelihood
    x, w, natural = np.asarray(d.x), np.asarray(d.w), np.asarray(jax.vmap(fam.to_natural)(
        states.theta))
    spikes = [fam.degenerate(p, x, w) for p in natural]
    f = np.where([bool(s) for s in spikes], -np.inf, f)
    if not np.isfinite(f).any():
        raise FitError(f"{fam.name}: every one of {len(spikes)} starts collapsed onto a "
                       f"degenerate optimum ({spikes[0]}); try fewer components or more "
                       "starts (n_starts)")
    best = int(np.argmax(f))
    # Fix the labelling (components sorted by loc) and re-verify from there.
    theta = fam.to_unconstrained(fam.canonical(fam.to_natural(states.theta[best])))
    out = polish_kernel(fam, d, theta, 5, tol)
    return out, int(np.asarray(states.it).sum())


def _device_of(d: Data) -> str:
    devs = d.x.devices() if hasattr(d.x, "devices") else {jax.devices()[0]}
    kinds = sorted({f"{dv.platform}" for dv in devs})
    return f"{','.join(kinds)}x{len(devs)}"


def _result(fam: Family, d: Data, out: KernelOut, method: str, n_rows: int, extra: dict,
            it_extra: int = 0) -> FitResult:
    """Host-side report: one transfer, then checks that turn NaN into errors or warnings."""
    out = jax.device_get(out)
    st = out.state
    f, p, g_norm = float(st.f), np.asarray(out.params), float(np.linalg.norm(st.g))
    if not np.isfinite(f) or not np.isfinite(p).all() or not np.isfinite(g_norm):
        raise FitError(f"{fam.name} fit failed: log-likelihood {f}, parameters {p.tolist()}, "
                       f"gradient norm {g_norm} (degenerate data, e.g. all values equal, or a "
                       "family that does not suit them)")
    cov, msg = np.asarray(out.cov), ""
    if not np.isfinite(cov).all():
        cov = np.full(cov.shape, np.inf)
        msg = "observed information is not positive definite: standard errors are unavailable"
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    converged = bool(st.converged)
    if not converged:
        msg = (msg + "; " if msg else "") + (
            f"did not converge in {int(st.it)} iterations (gradient norm {g_norm:.3g})")
        warnings.warn(f"{fam.name}: {msg}", ConvergenceWarning, stacklevel=3)
    names = fam.param_names
    return FitResult(
        family=fam.describe(), param_names=names,
        params={n: float(v) for n, v in zip(names, p)},
        se={n: float(v) for n, v in zip(names, se)}, cov=cov, loglik=f,
        n_obs=int(n_rows), n_params=fam.n_params,
        iterations=int(st.it) + int(out.start_iterations) + it_extra, grad_norm=g_norm,
        converged=converged, method=method, device=_device_of(d), message=msg, extra=extra)
