"""Fits over data that is never held at once: batches streamed from a source, pass by pass.

Exponential families on exact data need one pass: their sufficient statistics are sums
(shifted by one common value, so no cancellation), then the in-memory path's closed form and
Newton verification run on them. Everything else is Newton's method with each iteration's
value, gradient and Hessian accumulated batch by batch with the same jitted likelihood as the
in-memory fit; a trial step is one pass (the derivatives at the trial point come with its
value), so from a start fitted on the first batch a fit takes a few passes. The convergence
test is the in-memory solver's (:mod:`mleops.fit.newton`), so results agree with the
in-memory fit to optimiser precision. ``reduce`` sums each pass's totals across processes
(:func:`process_sum`): each process streams only its own share, and only sums cross hosts.
A batch a process refuses (bad values) fails the pass on every process, so none waits forever.
Boundary checks that look at rows (separation, a generalized Pareto end point) see the first
batch; limit families (Poisson for a negative binomial, normal for Student t) are streamed too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mleops.errors import ConvergenceWarning, DataError, FitError
from mleops.families import Family
from mleops.fit.boundary import check_spread, with_boundary
from mleops.fit.core import KernelOut, from_sums, natural_cov_jax
from mleops.fit.data import Data, make_data, with_weights
from mleops.fit.design import DesignStats, to_user_scale
from mleops.fit.likelihood import total_loglik
from mleops.fit.newton import GRAD_RTOL, SolverState, ascent_direction, value_grad_hessian
from mleops.fit.sharded import pad_rows
from mleops.fit.suffstats import SUFFICIENT, shift_of, sum_width, sums

Batch = dict[str, np.ndarray]
Source = Callable[[], Iterator[Batch]]  # each call starts a new pass over this process' rows

@dataclass(frozen=True)
class Roles:
    """Which columns of a batch play which part (names as in the table)."""

    response: str
    event: str = ""
    weights: str = ""
    covariates: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [c for c in (self.response, self.event, self.weights, *self.covariates) if c]

    def design(self, b: Batch) -> np.ndarray | None:
        """The batch's design matrix: intercept ``const`` then the covariates (or None)."""
        if not self.covariates:
            return None
        return np.column_stack([np.ones(len(b[self.response])), *(b[c] for c in self.covariates)])


def local_gather(values: np.ndarray) -> np.ndarray:
    """One process: its values are all there is (shape ``(1, len)``)."""
    return np.asarray(values)[None]


def process_gather(values: np.ndarray) -> np.ndarray:
    """Every process's ``values``, in rank order (``(processes, len)``), the same on each:
    so sums taken from it are the same bits everywhere and the solvers stay in lockstep."""
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(np.asarray(values)))
    return gathered.reshape(jax.process_count(), -1)


#: rows per step of the derivative scan: the kernels' temporaries (tangents, both censoring
#: branches) are per chunk, so a batch costs its own arrays and not 40x them
CHUNK = 1 << 16


@partial(jax.jit, static_argnames=("fam",))
def _derivs(fam: Family, theta, d: Data):
    """(f, g, H) summed over the batch: whole CHUNKs by a scan, then the rest at once."""
    n = d.x.shape[0]
    whole = n // CHUNK * CHUNK

    def at(c):
        c = with_weights(c)
        return value_grad_hessian(lambda th: total_loglik(fam, th, c))(theta)

    def add(acc, c):
        return jax.tree.map(jnp.add, acc, at(c)), None

    k = theta.shape[0]
    total = (jnp.zeros((), theta.dtype), jnp.zeros(k, theta.dtype), jnp.zeros((k, k),
                                                                              theta.dtype))
    if whole:
        chunks = jax.tree.map(lambda a: a[:whole].reshape((whole // CHUNK, CHUNK)
                                                          + a.shape[1:]), d)
        total = jax.lax.scan(add, total, chunks)[0]
    if whole < n:
        total = jax.tree.map(jnp.add, total, at(jax.tree.map(lambda a: a[whole:], d)))
    return total


@partial(jax.jit, static_argnames=("fam",))
def _boundary_counts(fam: Family, theta, d: Data):
    """The family's boundary row statistics at ``theta`` over a batch (its padding weighs 0;
    on a standardised design the linear predictor is the user-scale one)."""
    return fam.boundary_counts(fam.to_natural(theta), d.x, d.X, d.w)


# single reductions: XLA on CPU runs those in parallel (see mleops.fit.suffstats.sums)
_min, _max = jax.jit(jnp.min), jax.jit(jnp.max)


class _Pass:
    """One pass: each batch validated, padded to one shape, and handed to ``each``."""

    def __init__(self, fam: Family, roles: Roles, rows: int, design: DesignStats | None):
        self.fam, self.roles, self.rows, self.design = fam, roles, rows, design
        self.n = self.events = self.below = 0
        self.per_process: list[int] = []
        self.lo, self.hi = np.inf, -np.inf
        self.boundary: np.ndarray | None = None  # the family's boundary sums, every row

    def data(self, b: Batch) -> Data | None:
        r, fam = self.roles, self.fam
        x = b[r.response]
        event = b[r.event] if r.event else None
        w = b[r.weights] if r.weights else None
        X = r.design(b)
        if (keep := fam.modeled_rows(x)) is not None:
            self.below += int((~keep).sum())
            x, event, w = x[keep], _cut(event, keep), _cut(w, keep)
            X = None if X is None else X[keep]
        if not len(x):
            return None
        d = make_data(fam, x, weights=w, event=event, X=None if X is None else (
            self.design.apply(X) if self.design else X))
        self.n += len(x)
        lo, hi = (_min(d.x), _max(d.x)) if w is None else (x[w > 0].min(initial=np.inf),
                                                            x[w > 0].max(initial=-np.inf))
        self.lo, self.hi = min(self.lo, float(lo)), max(self.hi, float(hi))
        self.events += len(x) if event is None else int(np.sum(event == 1))
        total = max(self.rows, len(x))
        if total == len(x):  # a full batch: no padding, so no explicit unit weights
            return d._replace(trunc_lo=None, trunc_hi=None)
        w = jnp.ones(len(x)) if d.w is None else d.w
        return Data(pad_rows(d.x, total), pad_rows(w, total, zero=True), pad_rows(d.X, total),
                    pad_rows(d.kind, total))


def _cut(a, keep):
    return None if a is None else a[keep]


def fit_stream(source: Source, fam: Family, roles: Roles, *, rows: int,
               start: Batch, max_iter: int = 100, tol: float = 1e-12,
               gather: Callable[[np.ndarray], np.ndarray] = local_gather):
    """Maximum-likelihood fit of ``fam`` to every row ``source`` yields (across processes,
    with ``gather``). ``start``: the same first rows of the whole dataset on every process
    (the start values use them; the boundary's row statistics come with the solver's
    passes, over every row); ``rows``: batch size."""
    from mleops.fit.api import _result, fit

    if fam.multistart:
        raise DataError(f"{fam.name} is fitted from several starts in memory; streamed fits "
                        "take single-start families (drop --max-memory, or use more memory)")
    design = None
    if roles.covariates:  # one pass for the design's scale: badly scaled columns stall Newton
        design = _design(source, roles, gather)
    exact = not roles.event
    if exact and fam.name in SUFFICIENT and not fam.uses_covariates:
        state, p = _sufficient(source, fam, roles, rows, start, gather, max_iter, tol)
    else:
        theta0 = _start(fam, roles, start, design, fit)
        state, p = _newton(source, fam, roles, rows, design, theta0, gather, max_iter, tol)
    if p.n == 0:
        raise DataError("data: no rows to fit (empty input)")
    if p.lo == p.hi:
        check_spread(fam, np.full(2, p.lo), None, exact=exact, count=p.n)
    if not p.events:
        raise DataError(f"no observed events: all {p.n} rows are right-censored, so the "
                        "likelihood keeps rising as the scale grows and no MLE exists")
    out = KernelOut(state, jnp.asarray(0), fam.to_natural(state.theta),
                    natural_cov_jax(fam, state.theta, state.H))
    extra = {"streamed": True, "batch_rows": rows, "rows_per_process": p.per_process}
    if getattr(fam, "threshold", None) is not None:
        extra.update(threshold=fam.threshold, n_exceedances=p.n, n_below_threshold=p.below)
    sample = Data(jnp.asarray(start[roles.response]), None)
    result = _result(fam, sample, out, "newton", p.n, extra)
    if design is not None:
        result = to_user_scale(result, design.map())
    X0 = roles.design(start)
    limit = lambda lim: fit_stream(source, lim, roles, rows=rows, start=start,  # noqa: E731
                                   max_iter=max_iter, tol=tol, gather=gather)
    return with_boundary(fam, result, np.asarray(start[roles.response]), X0, limit,
                         p.boundary)


def _checked(p: _Pass, totals: np.ndarray, error: str, gather) -> np.ndarray:
    """The pass' totals summed across processes (rows, events and failures with them)."""
    local = np.concatenate([totals, [p.n, p.events, 1.0 if error else 0.0]])
    every = gather(local)
    out = every.sum(axis=0)
    p.per_process = [int(v) for v in every[:, -3]]
    if out[-1]:
        raise DataError(error or "another process of the job refused its share of the data "
                                 "(its log names the rows)")
    p.n, p.events = int(out[-3]), int(out[-2])
    return out[:-3]


def _run(source: Source, p: _Pass, each: Callable[[Data], np.ndarray], width: int,
         gather) -> np.ndarray:
    totals, error = np.zeros(width), ""
    try:
        for b in source():
            if (d := p.data(b)) is not None:
                totals += np.asarray(each(d), dtype=np.float64)
    except DataError as e:
        error = str(e)
    return _checked(p, totals, error, gather)


def _sufficient(source, fam, roles, rows, start, gather, max_iter, tol):
    v0 = shift_of(fam.name, start[roles.response][:1])
    p = _Pass(fam, roles, rows, None)
    width = sum_width(fam.name)
    total = _run(source, p, lambda d: sums(fam.name, d.x, d.w, v0), width, gather)
    state = jax.device_get(from_sums(fam, total, v0, max_iter, tol).state)
    return state, p


def _start(fam: Family, roles: Roles, start: Batch, design, fit) -> jnp.ndarray:
    """Start values: the in-memory fit of the first rows (on the streamed design's scale)."""
    X = roles.design(start)
    event = start[roles.event] if roles.event else None
    w = start[roles.weights] if roles.weights else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            values = fit(start[roles.response], fam, event=event, weights=w, X=X).values
    except (DataError, FitError):  # too few rows to say much: the family's own guess
        d = make_data(fam, start[roles.response], weights=w, event=event, X=X)
        values = np.asarray(fam.init(d.x, d.w if d.w is not None else jnp.ones_like(d.x),
                                     d.X))
    if design is not None:  # b = M c on the coefficients
        k = design.map().shape[0]
        values = np.concatenate([np.linalg.solve(design.map(), values[:k]), values[k:]])
    return fam.to_unconstrained(jnp.asarray(values))


def _newton(source, fam, roles, rows, design, theta0, gather, max_iter, tol):
    """The in-memory solver's iteration (:func:`mleops.fit.newton.newton`), one pass per
    trial point: the derivatives at an accepted point come with the pass that tried it."""
    k = int(theta0.shape[0])

    wb = fam.boundary_width  # the boundary's row statistics ride along with each pass

    def each(t, d: Data):
        parts = [jnp.atleast_1d(v).ravel() for v in _derivs(fam, t, d)]
        return jnp.concatenate([*parts, _boundary_counts(fam, t, d)] if wb else parts)

    def at(theta) -> tuple[float, np.ndarray, np.ndarray, _Pass]:
        p = _Pass(fam, roles, rows, design)
        t = jnp.asarray(theta)
        flat = _run(source, p, partial(each, t), 1 + k + k * k + wb, gather)
        p.boundary = flat[1 + k + k * k:] if wb else None
        return float(flat[0]), flat[1:1 + k], flat[1 + k:1 + k + k * k].reshape(k, k), p

    theta = np.asarray(theta0, np.float64)
    f, g, H, p = at(theta)
    it, converged = 0, False
    while np.isfinite(f) and it < max_iter:
        d, dec = (np.asarray(v) for v in ascent_direction(jnp.asarray(g), jnp.asarray(H)))
        dec = float(dec)
        flat = np.max(np.abs(g)) <= GRAD_RTOL * (1.0 + abs(f))
        if 0.5 * dec <= tol * (1.0 + abs(f)) and flat:
            converged = True
            # One more full step, kept if it is no worse: the criterion allows an error of
            # order sqrt(tol) relative, and from that close one step is exact to round-off
            # (a start fitted on the first batch meets the criterion after a single step).
            f_new, g_new, H_new, p_new = at(theta + d)
            if np.isfinite(f_new) and f_new >= f:
                theta, f, g, H, p = theta + d, f_new, g_new, H_new, p_new
            break
        for step in range(60):
            t = 0.5 ** step
            f_new, g_new, H_new, p_new = at(theta + t * d)
            if np.isfinite(f_new) and f_new >= f + 1e-4 * t * dec:
                theta, f, g, H, p = theta + t * d, f_new, g_new, H_new, p_new
                it += 1
                break
        else:  # no ascent: round-off at the optimum, or stuck
            converged = flat and 0.5 * dec <= 1e-8 * (1.0 + abs(f))
            break
        if fam.at_limit(np.asarray(fam.to_natural(jnp.asarray(theta)))):
            break  # drifting to a limit family: each further pass only re-reads the data
    state = SolverState(jnp.asarray(theta), jnp.asarray(f), jnp.asarray(g), jnp.asarray(H),
                        jnp.asarray(it), jnp.asarray(True), jnp.asarray(converged))
    return state, p


def _design(source: Source, roles: Roles, gather) -> DesignStats:
    """Column statistics of the design over every row (every process's share)."""
    stats = DesignStats.empty(1 + len(roles.covariates))
    for b in source():
        stats = stats.merge(DesignStats.of(roles.design(b)))
    merged = DesignStats.empty(stats.mean.size)
    for row in gather(stats.to_vector()):  # in rank order: the same result on every process
        merged = merged.merge(DesignStats.from_vector(row))
    return merged


__all__ = ["CHUNK", "Roles", "fit_stream", "local_gather", "process_gather"]
