"""The champion's baseline: the per-row log-likelihood it reaches on rows it should score well.

Drift is a drop *relative to* this baseline, so where it comes from matters: the held-out
rows the training run scored (logged as ``heldout_avg_loglik`` / ``heldout_sd_loglik`` /
``heldout_n``), rows the user names, or, as a last resort, draws from the model itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mleops.artifact import ModelArtifact
from mleops.errors import DataError


@dataclass
class Baseline:
    """Per-row log-likelihood of the champion on rows it should score well: mean, sd, rows."""

    mean: float
    sd: float
    n: int | None  # rows behind the estimate; None = known exactly
    source: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.sd) and self.sd > 0):
            raise DataError(f"baseline needs a finite mean and a positive sd, got mean "
                            f"{self.mean}, sd {self.sd} ({self.source})")

    @classmethod
    def from_loglik(cls, ll, source: str = "held-out rows") -> Baseline:
        ll = np.asarray(ll, dtype=np.float64).ravel()
        if ll.size < 2 or not np.isfinite(ll).all():
            raise DataError(f"baseline: need >= 2 finite log-likelihoods, got {ll.size}")
        return cls(float(ll.mean()), float(ll.std(ddof=1)), int(ll.size), source)

    def lower_mean(self, alpha: float) -> float:
        """One-sided ``1 - alpha`` lower bound of the mean: false alarms stay bounded."""
        if not self.n:
            return self.mean
        return self.mean - float(stats.norm.ppf(1 - alpha)) * self.sd / math.sqrt(self.n)


def model_baseline(artifact: ModelArtifact, *, n: int = 100_000, seed: int = 0) -> Baseline:
    """Model-implied baseline from ``n`` draws of the model itself.

    The fallback when no held-out rows are known: it equals the held-out baseline only for a
    well-specified model, and needs a one-sample, uncensored family.
    """
    import jax

    if artifact.features:
        raise DataError("a regression model has no model-implied baseline (it depends on the "
                        "covariates): give held-out rows (--baseline-data)")
    x = artifact.fam.sample(jax.random.PRNGKey(seed), artifact.values, (n,))
    return Baseline.from_loglik(artifact.loglik_rows(np.asarray(x)),
                                source=f"model-implied ({n} simulated rows, seed {seed})")


def registry_baseline(registry, name: str, version: str, artifact: ModelArtifact) -> Baseline | None:
    """Held-out baseline the training run of ``name`` v``version`` logged, None if none.

    The pipeline logs ``heldout_avg_loglik`` and ``heldout_n``; when ``heldout_sd_loglik`` is
    missing the sd is model-implied (said in ``source``).
    """
    run_id = next((v["run_id"] for v in registry.list_versions(name)
                   if v["version"] == str(version)), None)
    if not run_id:
        return None
    metrics = registry.run_metrics(run_id)
    if "heldout_avg_loglik" not in metrics:
        return None
    source = f"held-out rows of {name} v{version} (run {run_id})"
    sd = metrics.get("heldout_sd_loglik")
    if sd is None:
        sd = model_baseline(artifact).sd
        source += "; sd model-implied (run logged no heldout_sd_loglik)"
    return Baseline(float(metrics["heldout_avg_loglik"]), float(sd),
                    int(metrics.get("heldout_n", 0)) or None, source)


__all__ = ["Baseline", "model_baseline", "registry_baseline"]
