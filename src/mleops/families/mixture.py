"""K-component Gaussian mixture: weights on the simplex (softmax with a pinned first logit).

The likelihood is multimodal and invariant to relabelling, so fits use several vmapped
starts and components are reported sorted by ``loc`` (a fixed labelling makes SEs and
comparisons across fits meaningful).

It is also unbounded: a component that collapses onto a few points (scale -> 0) sends it to
+inf, so the "best" optimum of many starts is often such a spike. Optima with a component
narrower than ``SCALE_FLOOR`` x the data's sd, or carrying fewer than ``MIN_ROWS`` rows of
weight, are degenerate (:meth:`GaussianMixture.degenerate`) and never reported; the fit keeps
the best of the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.scipy import stats as jst
from jax.scipy.special import logsumexp

from mleops.families.base import Family
from mleops.families.constraints import positive, real

SCALE_FLOOR = 0.01  # a component's scale, as a share of the data's sd
MIN_ROWS = 5.0  # weighted rows a component must explain


@dataclass(frozen=True)
class GaussianMixture(Family):
    k: int = 2
    name = "gaussian_mixture"
    option_names = ("k",)
    multistart = True
    batchable = False

    @property
    def param_names(self):
        k = range(self.k)
        return (tuple(f"weight_{i}" for i in k) + tuple(f"loc_{i}" for i in k)
                + tuple(f"scale_{i}" for i in k))

    @property
    def constraints(self):  # the free coordinates: K-1 logits, K locs, K log-scales
        return (real,) * (2 * self.k - 1) + (positive,) * self.k

    def to_natural(self, theta):
        k = self.k
        logits = jnp.concatenate([jnp.zeros(1, theta.dtype), theta[: k - 1]])
        return jnp.concatenate([jax.nn.softmax(logits), theta[k - 1: 2 * k - 1],
                                jnp.exp(theta[2 * k - 1:])])

    def to_unconstrained(self, p):
        k = self.k
        lw = jnp.log(p[:k])
        return jnp.concatenate([lw[1:] - lw[0], p[k: 2 * k], jnp.log(p[2 * k:])])

    def check_params(self, p):
        import numpy as np

        p = np.asarray(p, float)
        k = self.k
        if not (np.all(p[:k] > 0) and abs(p[:k].sum() - 1) < 1e-6):
            return "mixture weights must be positive and sum to 1"
        if not np.all(p[2 * k:] > 0):
            return "mixture scales must be positive"
        return None

    def _split(self, p):
        k = self.k
        return p[:k], p[k: 2 * k], p[2 * k:]

    def _comp(self, fn, x, p):
        w, m, s = self._split(p)
        return logsumexp(jnp.log(w) + fn(x[..., None], m, s), axis=-1)

    def logpdf(self, x, p, X=None):
        return self._comp(jst.norm.logpdf, x, p)

    def logcdf(self, x, p, X=None):
        return self._comp(jst.norm.logcdf, x, p)

    def logsf(self, x, p, X=None):
        return self._comp(lambda x, m, s: jst.norm.logcdf(-x, -m, s), x, p)

    def sample(self, key, p, shape, X=None):
        w, m, s = self._split(p)
        k1, k2 = jax.random.split(key)
        c = jax.random.choice(k1, self.k, shape, p=w)
        return m[c] + s[c] * jax.random.normal(k2, shape, jnp.float64)

    def mean(self, p, X=None):
        w, m, _ = self._split(p)
        return jnp.sum(w * m)

    def init(self, x, w, X=None):
        """Deterministic start: locs at weighted quantiles, equal weights, pooled scale."""
        order = jnp.argsort(x)
        cw = jnp.cumsum(w[order]) / jnp.sum(w)
        qs = (jnp.arange(self.k) + 0.5) / self.k
        locs = x[order][jnp.searchsorted(cw, qs)]
        sw = jnp.sum(w)
        sd = jnp.sqrt(jnp.sum(w * (x - jnp.sum(w * x) / sw) ** 2) / sw)
        return jnp.concatenate([jnp.full(self.k, 1.0 / self.k), locs,
                                jnp.full(self.k, jnp.maximum(sd / self.k, 1e-6))])

    def degenerate(self, p, x, w):
        import numpy as np

        weights, _, scales = (np.asarray(v, float) for v in self._split(np.asarray(p, float)))
        x, w = np.asarray(x, float), np.asarray(w, float)
        total = float(w.sum())
        sd = float(np.sqrt(np.sum(w * (x - np.sum(w * x) / total) ** 2) / total))
        rows = weights * total
        if (scales < SCALE_FLOOR * sd).any() or (rows < MIN_ROWS).any():
            j = int(np.argmin(np.minimum(scales / (SCALE_FLOOR * sd), rows / MIN_ROWS)))
            return (f"component {j} collapsed (scale {scales[j]:.3g} vs the data's sd "
                    f"{sd:.3g}, {rows[j]:.3g} rows of weight): a spike on a few points, where "
                    f"the mixture likelihood is unbounded")
        return ""

    def canonical(self, p):
        """Sort components by loc so labels are stable across fits."""
        w, m, s = self._split(p)
        o = jnp.argsort(m)
        return jnp.concatenate([w[o], m[o], s[o]])

    def describe(self):
        return {"name": self.name, "k": self.k}
