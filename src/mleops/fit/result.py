"""The fit result: estimates, uncertainty and an honest convergence report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FitResult:
    """What every fit returns. ``cov``/``se`` come from the observed Fisher information."""

    family: dict
    param_names: tuple[str, ...]
    params: dict[str, float]
    se: dict[str, float]
    cov: np.ndarray
    loglik: float
    n_obs: int
    n_params: int
    iterations: int
    grad_norm: float
    converged: bool
    method: str
    device: str = "cpu"
    message: str = ""
    extra: dict = field(default_factory=dict)
    #: why this is no interior MLE ("" for an ordinary fit): see mleops.fit.boundary
    boundary: str = ""
    #: the limit family's fit (family, params, loglik, lr_statistic) where the family has one
    limit: dict = field(default_factory=dict)

    @property
    def aic(self) -> float:
        return 2 * self.n_params - 2 * self.loglik

    @property
    def bic(self) -> float:
        return self.n_params * math.log(self.n_obs) - 2 * self.loglik

    @property
    def values(self) -> np.ndarray:
        """Natural parameters as a vector in ``param_names`` order."""
        return np.array([self.params[n] for n in self.param_names])

    def ci(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Wald intervals, estimate +/- z * se."""
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + level / 2)
        return {n: (self.params[n] - z * self.se[n], self.params[n] + z * self.se[n])
                for n in self.param_names}

    def to_dict(self) -> dict:
        """JSON-ready summary (the CLI's ``--json`` output)."""
        return {
            "family": self.family["name"], "family_options": self.family,
            "params": self.params, "se": self.se,
            "ci95": {k: list(v) for k, v in self.ci(0.95).items()},
            "cov": self.cov.tolist(), "loglik": self.loglik, "aic": self.aic, "bic": self.bic,
            "n_obs": self.n_obs, "n_params": self.n_params, "converged": self.converged,
            "iterations": self.iterations, "grad_norm": self.grad_norm, "method": self.method,
            "device": self.device, "message": self.message, "boundary": self.boundary,
            "limit": self.limit, **self.extra,
        }

    def summary(self) -> str:
        """Human-readable table: estimates, standard errors, 95% CIs and fit statistics."""
        lines = [f"family: {self.family['name']}  n={self.n_obs}  method={self.method}",
                 f"{'param':<14}{'estimate':>14}{'se':>12}{'ci95_low':>14}{'ci95_high':>14}"]
        for n, (lo, hi) in self.ci(0.95).items():
            lines.append(f"{n:<14}{self.params[n]:>14.6g}{self.se[n]:>12.4g}{lo:>14.6g}{hi:>14.6g}")
        lines.append(f"loglik={self.loglik:.6f}  aic={self.aic:.4f}  bic={self.bic:.4f}")
        lines.append(f"converged={self.converged}  iterations={self.iterations}  "
                     f"grad_norm={self.grad_norm:.3g}")
        if self.boundary:
            lines.append(f"BOUNDARY: {self.boundary}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v:.6g}±{self.se[k]:.2g}" for k, v in self.params.items())
        return (f"FitResult({self.family['name']}: {ps}; loglik={self.loglik:.6f}, "
                f"converged={self.converged}, iterations={self.iterations})")
