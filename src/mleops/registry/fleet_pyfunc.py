"""The MLflow pyfunc face of a fleet: per-row log-likelihood, each row under its key's model.

Like :mod:`mleops.registry.pyfunc` it holds no parameters and no pickle: a three-line script
reads the fleet artifact (``fleet.json`` + ``fleet.parquet``) at load time. Input: a table
with the fleet's key column(s), ``x`` and optional ``event``; an unknown key raises
:class:`~mleops.errors.DataError` naming it (or, for a fleet built with
``unknown_key="pooled"``, is answered by the pooled fit, flagged in column ``pooled``).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from mleops.errors import DataError
from mleops.fleet_artifact import FleetArtifact

CODE = ("from mlflow.models import set_model\n"
        "from mleops.registry.fleet_pyfunc import FleetPyfunc\n\n"
        "set_model(FleetPyfunc())\n")


def signature(art: FleetArtifact):
    """The model signature: string key column(s), double ``x``, optional long ``event``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("string", k) for k in art.key_names] + [
        ColSpec("double", "x"), ColSpec("long", "event", required=False)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(
        [ColSpec("double", "loglik"), ColSpec("boolean", "pooled")]))


def predict_fleet_frame(art: FleetArtifact, frame: Any) -> pd.DataFrame:
    """Score a table of rows of many keys (see the module docstring)."""
    if isinstance(frame, dict):
        frame = pd.DataFrame(frame)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"fleet input must be a table, got {type(frame).__name__}")
    if missing := [c for c in (*art.key_names, "x") if c not in frame.columns]:
        raise DataError(f"fleet input lacks column(s) {missing}; it has {list(frame.columns)}")
    try:
        x = frame["x"].to_numpy().astype(np.float64)
    except (TypeError, ValueError):
        raise DataError("fleet input column 'x': expected numbers") from None
    event = frame["event"].to_numpy() if "event" in frame.columns else None
    keys = [frame[k].to_numpy() for k in art.key_names]
    at = art.rows_of(keys)
    from mleops.fleet_kernel import keyed_loglik

    ll = keyed_loglik(art.family, art.row_params(at), x, event=event)
    return pd.DataFrame({"loglik": ll, "pooled": at < 0}, index=frame.index)


class FleetPyfunc(mlflow.pyfunc.PythonModel):
    """Stateless wrapper: everything it knows comes from the ``fleet`` artifact directory."""

    def __init__(self) -> None:
        self.fleet: FleetArtifact | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "fleet": None}

    def load_context(self, context) -> None:
        try:
            path = context.artifacts["fleet"]
        except (KeyError, TypeError):
            raise DataError("fleet pyfunc model has no 'fleet' artifact") from None
        self.fleet = FleetArtifact.load(path)

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.fleet is None:
            if context is None:
                raise DataError("fleet model not loaded: call load_context first")
            self.load_context(context)
        return predict_fleet_frame(self.fleet, model_input)


__all__ = ["CODE", "FleetPyfunc", "predict_fleet_frame", "signature"]
