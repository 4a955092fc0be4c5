"""The family protocol: named parameters, constraints as data, log-densities and CDFs.

A family is a frozen (hashable) dataclass so it can be a static argument of ``jax.jit``.
Every method takes the *natural* parameter vector ``p`` (constrained space, the order of
``param_names``) and, for regression families, a design matrix ``X``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mleops.families.constraints import Constraint


@dataclass(frozen=True)
class Family:
    """Base class. Subclasses set ``name``, ``names``/``constraints`` and the densities."""

    name: ClassVar[str] = ""
    discrete: ClassVar[bool] = False
    uses_covariates: ClassVar[bool] = False
    #: lowest value of the support (for support checks, ppf brackets and sampling pads)
    lower: ClassVar[float] = -math.inf
    #: whether the support excludes ``lower`` itself (x > 0 for gamma, weibull, lognormal)
    lower_open: ClassVar[bool] = False
    #: the user-set options the family takes (``threshold``, ``k``): what pipelines pass on
    option_names: ClassVar[tuple[str, ...]] = ()
    #: local maxima are the rule (mixtures): fit from several starts and keep the best
    multistart: ClassVar[bool] = False
    #: ``fit_many`` can fit many series of it in one vmapped call
    batchable: ClassVar[bool] = True
    #: the family this one tends to at an edge of its parameter space (negative binomial ->
    #: Poisson as n -> inf, Student t -> normal as df -> inf). Every fit also fits the limit:
    #: an MLE no better than the limit's is on the boundary, and is reported so
    limit_family: ClassVar[str] = ""

    def limit_options(self) -> dict:
        """Options of :attr:`limit_family` (a GLM's limit keeps its features)."""
        return {}

    def at_limit(self, p: np.ndarray) -> bool:
        """Whether ``p`` is so close to the limit that its own log-likelihood is round-off
        (a Student t with df 1e10): then the limit's fit is the answer."""
        return False

    #: how many summable row statistics :meth:`boundary` reads (:meth:`boundary_counts`)
    boundary_width: ClassVar[int] = 0

    def boundary(self, p: np.ndarray, x: np.ndarray, X: np.ndarray | None,
                 counts: np.ndarray | None = None) -> str:
        """Why fitted natural parameters ``p`` are no interior MLE (the likelihood is
        unbounded, or its supremum is not attained), or "" for an ordinary fit. ``counts``:
        :meth:`boundary_counts` summed over every row (a streamed fit's), else read from
        ``x``/``X``."""
        return ""

    def boundary_counts(self, p, x, X, w=None) -> jax.Array | None:
        """The row statistics :meth:`boundary` needs, as ``boundary_width`` sums (so batches
        and processes add up); rows of weight 0 (a batch's padding) count for nothing."""
        return None

    def degenerate(self, p: np.ndarray, x: np.ndarray, w: np.ndarray) -> str:
        """Why ``p`` is a degenerate optimum that must not be reported (a mixture component
        collapsed onto a few points, where the likelihood is unbounded), or ""."""
        return ""

    @property
    def outcome(self) -> str:
        """What a row's response is: ``continuous``, ``count`` or ``binary`` (calibration's
        check follows it)."""
        return "count" if self.discrete else "continuous"

    def modeled_rows(self, x: np.ndarray) -> np.ndarray | None:
        """Mask of the rows the family models; None means every row (the usual case).

        A peaks-over-threshold model describes only the exceedances: fitting, validation,
        held-out scoring and monitoring all keep the same rows through this one rule.
        """
        return None

    # --- parameters -------------------------------------------------------------------
    @property
    def param_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        raise NotImplementedError

    @property
    def n_params(self) -> int:
        """Number of free (unconstrained) coordinates: what AIC/BIC count."""
        return len(self.constraints)

    def to_natural(self, theta: jax.Array) -> jax.Array:
        return jnp.stack([c.forward(theta[i]) for i, c in enumerate(self.constraints)])

    def to_unconstrained(self, p: jax.Array) -> jax.Array:
        return jnp.stack([c.inverse(p[i]) for i, c in enumerate(self.constraints)])

    def check_params(self, p: np.ndarray) -> str | None:
        """Message naming the first parameter outside its constraint, else None."""
        for n, c, v in zip(self.param_names, self.constraints, np.asarray(p, float)):
            if not c.contains(v):
                return f"parameter {n}={v} violates constraint {c.name}"
        return None

    # --- densities (subclasses implement logpdf, logcdf, logsf) -------------------------
    def logpdf(self, x, p, X=None):
        raise NotImplementedError

    def logcdf(self, x, p, X=None):
        raise NotImplementedError

    def logsf(self, x, p, X=None):
        raise NotImplementedError

    def cdf(self, x, p, X=None):
        return jnp.exp(self.logcdf(x, p, X))

    def sf(self, x, p, X=None):
        return jnp.exp(self.logsf(x, p, X))

    def ppf(self, q, p, X=None):
        """Quantile function; default: bracketed bisection on the CDF (vectorised)."""
        return _bisect_ppf(self, jnp.asarray(q, jnp.float64), p, X)

    def sample(self, key, p, shape, X=None):
        """Draws by inversion; families with a native jax.random sampler override this."""
        u = jax.random.uniform(key, shape, jnp.float64, 1e-12, 1 - 1e-12)
        return self.ppf(u, p, X)

    def mean(self, p, X=None):
        raise NotImplementedError

    # --- fitting support -----------------------------------------------------------------
    def init(self, x, w, X=None) -> jax.Array:
        """Start values (method of moments / closed form), jax-traceable so fits vmap."""
        raise NotImplementedError

    def check_support(self, x: np.ndarray) -> str | None:
        """Return a message if some value lies outside the support, else None."""
        lower = self.lower
        bounded = lower > -math.inf
        below = bounded and (x.min() <= lower if self.lower_open else x.min() < lower)
        if not below and not (self.discrete and (x != np.round(x)).any()):
            return None  # the common case: one or two reductions, no index arrays
        bad = (x <= lower if self.lower_open else x < lower) if bounded else np.zeros(x.shape, bool)
        if self.discrete:
            bad |= x != np.round(x)
        i = int(np.flatnonzero(bad)[0])
        what = ("non-negative integers" if self.discrete else
                f"values {'>' if self.lower_open else '>='} {lower:g}")
        return (f"{int(bad.sum())} value(s) outside the support of {self.name} "
                f"({what}); first at row {i}: {x[i].item()!r}")

    def support_point(self) -> float:
        """A value inside the support whatever the parameters (the lower end plus one, or 0 on
        the real line): what a server scores to compile its ``loglik`` kernel, where the
        median (``ppf``) would compile a second, far larger program it may never need."""
        return float(self.lower + 1.0) if math.isfinite(self.lower) else 0.0

    def safe_value(self, p) -> jax.Array:
        """A value inside the support (used for padding and masked branches)."""
        return self.ppf(jnp.asarray(0.5), p)

    def describe(self) -> dict:
        """JSON-serialisable description from which ``get_family`` rebuilds the family."""
        return {"name": self.name}


def _mean_var(x, w):
    sw = jnp.sum(w)
    m = jnp.sum(w * x) / sw
    v = jnp.sum(w * (x - m) ** 2) / sw
    return m, v


def _bisect_ppf(fam: Family, q, p, X):
    lo0 = (fam.lower - 1.0 if fam.discrete else fam.lower) if math.isfinite(fam.lower) else -1.0
    lo = jnp.full(q.shape, lo0)
    hi = jnp.full(q.shape, lo0 + 1.0)

    def expand(_, lh):
        lo, hi = lh
        width = hi - lo
        lo = jnp.where((not math.isfinite(fam.lower)) & (fam.cdf(lo, p, X) > q), lo - 2 * width, lo)
        hi = jnp.where(fam.cdf(hi, p, X) < q, hi + 2 * width, hi)
        return lo, hi

    lo, hi = jax.lax.fori_loop(0, 80, expand, (lo, hi))

    def halve(_, lh):
        lo, hi = lh
        mid = 0.5 * (lo + hi)
        if fam.discrete:
            mid = jnp.floor(mid)
        below = fam.cdf(mid, p, X) < q
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 120, halve, (lo, hi))
    return jnp.ceil(hi) if fam.discrete else 0.5 * (lo + hi)
