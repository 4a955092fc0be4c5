"""The model artifact: a fitted family as plain JSON (no pickle, ever).

Everything a server, the gate or the registry needs: the family (rebuildable with
``get_family``), natural parameters, their covariance, fit diagnostics and provenance. The
methods evaluate the model on new rows (per-row log-likelihood, CDF, quantiles) with the same
kernels the fit used, so training and serving cannot disagree about the likelihood.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from mleops.errors import DataError
from mleops.families import Family, get_family
from mleops.fit.data import make_data
from mleops.fit.likelihood import row_loglik
from mleops.fit.sharded import pad_rows

SCHEMA_VERSION = 1
_row_loglik_jit = jax.jit(row_loglik, static_argnums=0)
FILENAME = "model.json"


@dataclass
class ModelArtifact:
    family: dict
    param_names: list[str]
    params: dict[str, float]
    cov: list[list[float]]
    loglik: float
    n_obs: int
    converged: bool
    iterations: int
    metadata: dict = field(default_factory=dict)  # data hash, seed, run ids, device ...
    schema_version: int = SCHEMA_VERSION

    # --- construction / persistence ------------------------------------------------------
    @classmethod
    def from_fit(cls, result, **metadata) -> ModelArtifact:
        return cls(family=dict(result.family), param_names=list(result.param_names),
                   params=dict(result.params), cov=np.asarray(result.cov).tolist(),
                   loglik=float(result.loglik), n_obs=int(result.n_obs),
                   converged=bool(result.converged), iterations=int(result.iterations),
                   metadata={"method": result.method, "device": result.device, **metadata})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> ModelArtifact:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"model artifact is not valid JSON: {e}") from None
        if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"unsupported model artifact (schema_version "
                            f"{raw.get('schema_version') if isinstance(raw, dict) else None!r})")
        missing = {"family", "param_names", "params", "cov"} - set(raw)
        if missing:
            raise DataError(f"model artifact lacks {sorted(missing)}")
        art = cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        fam = art.fam  # validates family and parameters
        msg = fam.check_params(art.values)
        if msg or list(fam.param_names) != list(art.param_names):
            raise DataError(f"model artifact inconsistent with family {fam.name}: "
                            f"{msg or art.param_names}")
        return art

    def save(self, path: str) -> str:
        """Write ``model.json`` into directory ``path`` (or to ``path`` if it ends in .json)."""
        target = path if path.endswith(".json") else os.path.join(path, FILENAME)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(target, "w") as f:
            f.write(self.to_json())
        return target

    @classmethod
    def load(cls, path: str) -> ModelArtifact:
        target = path if path.endswith(".json") else os.path.join(path, FILENAME)
        if not os.path.exists(target):
            raise DataError(f"no model artifact at {target}")
        with open(target) as f:
            return cls.from_json(f.read())

    # --- evaluation ------------------------------------------------------------------------
    @property
    def fam(self) -> Family:
        return get_family(self.family)

    @property
    def values(self) -> np.ndarray:
        return np.array([self.params[n] for n in self.param_names], dtype=np.float64)

    @property
    def features(self) -> list[str]:
        return list(self.family.get("features", []))

    def modeled_rows(self, x, *, event=None, X=None) -> dict:
        """``{"x", "event", "X"}`` restricted to the rows this model evaluates: those its
        family models (``Family.modeled_rows``; peaks over threshold: exceedances only)."""
        if (keep := self.fam.modeled_rows(np.asarray(x))) is not None:
            x = np.asarray(x)[keep]
            event = None if event is None else np.asarray(event)[keep]
            X = None if X is None else np.asarray(X)[keep]
        return {"x": x, "event": event, "X": X}

    def loglik_rows(self, x, *, event=None, X=None) -> np.ndarray:
        """Per-row log-likelihood of new data (validated like training data).

        Runs one compiled kernel; rows are padded to a power-of-two bucket so a server sees a
        handful of compilations, not one per request size.
        """
        x = np.asarray(x)
        n = x.shape[0] if x.ndim else 0
        size = max(16, 1 << max(n - 1, 0).bit_length())

        def pad(a):  # repeat row 0: valid input whose results are sliced off
            if a is None or n == 0 or np.ndim(a) == 0:
                return a
            return pad_rows(np.asarray(a), size)

        try:
            d = make_data(self.fam, pad(x), event=pad(event), X=pad(X))
        except DataError:  # report on the caller's rows, not on the padding copies
            make_data(self.fam, x, event=event, X=X)
            raise
        return np.asarray(_row_loglik_jit(self.fam, jnp.asarray(self.values), d))[:n]

    def cdf(self, x, X=None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.asarray(self.fam.cdf(jnp.asarray(x), jnp.asarray(self.values),
                                       None if X is None else jnp.asarray(X)))

    def ppf(self, q, X=None) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        if ((q <= 0) | (q >= 1)).any():
            raise DataError("quantile levels must lie strictly between 0 and 1")
        return np.asarray(self.fam.ppf(jnp.asarray(q), jnp.asarray(self.values),
                                       None if X is None else jnp.asarray(X)))

    def mean(self, X=None) -> np.ndarray:
        return np.asarray(self.fam.mean(jnp.asarray(self.values),
                                        None if X is None else jnp.asarray(X)))
