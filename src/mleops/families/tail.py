"""Generalised Pareto for exceedances over a fixed threshold (peaks over threshold).

Matches ``scipy.stats.genpareto.fit(x[x > u] - u, floc=0)``: parameters ``shape`` (c, xi)
and ``scale``; the threshold is part of the family, not a fitted parameter. Values at or
below the threshold are not modelled; ``fit`` drops them and reports how many were kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from mleops.families import special
from mleops.families.base import Family, _mean_var
from mleops.families.constraints import positive, real


@dataclass(frozen=True)
class GenPareto(Family):
    threshold: float = 0.0
    name = "genpareto"
    param_names = ("shape", "scale")
    constraints = (real, positive)
    option_names = ("threshold",)
    batchable = False

    def modeled_rows(self, x):
        """Peaks over threshold: the model describes the exceedances only."""
        return np.asarray(x) > self.threshold

    @property
    def lower(self):  # type: ignore[override]
        return self.threshold

    def _z(self, x, p):
        """xi * y / sigma and a flag for being inside the support."""
        y = x - self.threshold
        t = p[0] * y / p[1]
        ok = (y >= 0) & (t > -1)
        return y, jnp.where(ok, t, 0.0), ok

    def logsf(self, x, p, X=None):
        y, t, ok = self._z(x, p)
        xi = p[0]
        # Near xi = 0, -log1p(xi z)/xi by its series: exact limit *and* exact derivatives in
        # xi (the direct ratio cancels catastrophically there).
        small = jnp.abs(xi) < 1e-4
        z = jnp.maximum(y, 0.0) / p[1]
        xsmall = jnp.where(small, xi, 0.0)
        series = -sum((-xsmall) ** k * z ** (k + 1) / (k + 1) for k in range(5))
        val = jnp.where(small, series, -jnp.log1p(t) / jnp.where(small, 1.0, xi))
        return jnp.where(y < 0, 0.0, jnp.where(ok, val, -jnp.inf))

    def logpdf(self, x, p, X=None):
        y, t, ok = self._z(x, p)
        return jnp.where(ok, -jnp.log(p[1]) + (1 + p[0]) * self.logsf(x, p), -jnp.inf)

    def logcdf(self, x, p, X=None):
        return special.log1mexp(self.logsf(x, p))

    def ppf(self, q, p, X=None):
        xi = p[0]
        small = jnp.abs(xi) < 1e-8
        y = jnp.where(small, -jnp.log1p(-q),
                      jnp.expm1(-jnp.where(small, 1.0, xi) * jnp.log1p(-q)) / jnp.where(small, 1.0, xi))
        return self.threshold + p[1] * y

    def mean(self, p, X=None):
        return self.threshold + p[1] / (1 - p[0])

    def check_support(self, x):
        bad = ~(x > self.threshold)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return (f"{int(bad.sum())} value(s) at or below the threshold {self.threshold}; "
                    f"first at row {i}: {x[i].item()!r}")
        return None

    def init(self, x, w, X=None):
        # Method of moments on exceedances, shrunk into the region where they exist.
        m, v = _mean_var(x - self.threshold, w)
        xi = jnp.clip(0.5 * (1 - m * m / v), -0.45, 0.45)
        scale = m * (1 - xi)
        ymax = jnp.max(jnp.where(w > 0, x - self.threshold, 0.0))
        # for xi < 0 the support ends at -scale/xi: keep every observation strictly inside
        scale = jnp.where(xi < 0, jnp.maximum(scale, -xi * ymax * 1.01), scale)
        return jnp.stack([xi, scale])

    def boundary(self, p, x, X, counts=None):
        """Below shape -1 the likelihood is unbounded (Smith 1985): letting the end point
        -scale/shape close in on the largest exceedance sends it to +inf, so no MLE exists
        (between -1 and -0.5 one exists but is not asymptotically normal)."""
        if p[0] > -1.0 + 1e-6:
            return ""
        top = float(np.max(x))
        return (f"no maximum-likelihood estimate exists: the generalized Pareto likelihood is "
                f"unbounded for shape < -1 (Smith 1985), and the fit ran to shape "
                f"{p[0]:.3g} with its end point {self.threshold - p[1] / p[0]:.6g} on the "
                f"largest exceedance {top:.6g}: the exceedances have a hard upper end; model "
                f"it directly (e.g. a bounded family) instead")

    def describe(self):
        return {"name": self.name, "threshold": self.threshold}
