"""The MLflow pyfunc face of a model artifact: per-row log-likelihood, CDF and quantiles.

:class:`MleopsPyfunc` holds no parameters: it reads ``model.json`` from the model's artifacts at
load time and evaluates with :class:`ModelArtifact`, so a model loaded through
``mlflow.pyfunc.load_model`` scores exactly like the artifact the gate checked. It is logged as
"models from code" (a three-line script), so the logged model contains no pickle at all.
Input: a table with column ``x``, optional ``event`` (1 observed, 0 right-censored) and the
covariate columns of regression families; bad input raises :class:`DataError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd

from mleops._version import __version__
from mleops.artifact import ModelArtifact
from mleops.errors import DataError

#: quantile levels reported per row (column name -> level)
QUANTILES = {"q05": 0.05, "q50": 0.5, "q95": 0.95}
OUTPUT_COLUMNS = ["loglik", "cdf", *QUANTILES]


def input_columns(artifact: ModelArtifact) -> list[str]:
    """Covariate columns a request must carry (the design matrix minus its intercept)."""
    return [f for f in artifact.features if f != "const"]


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    values = frame[name].to_numpy()
    if values.dtype == object:
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"input column {name!r}: expected numbers, got "
                            f"{values[0]!r} (row 0)") from None
    return values


def predict_frame(artifact: ModelArtifact, frame: Any) -> pd.DataFrame:
    """Score a table with column ``x`` (optional ``event``, plus the covariate columns)."""
    if isinstance(frame, dict):
        frame = pd.DataFrame(frame)
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"model input must be a table (pandas DataFrame), got "
                        f"{type(frame).__name__}")
    missing = [c for c in ("x", *input_columns(artifact)) if c not in frame.columns]
    if missing:
        raise DataError(f"model input lacks column(s) {missing}; it has {list(frame.columns)}")
    x = _column(frame, "x")
    event = _column(frame, "event") if "event" in frame.columns else None
    X = None
    if artifact.features:
        X = np.column_stack([np.ones(len(frame)) if f == "const" else _column(frame, f)
                             for f in artifact.features]).astype(np.float64)
    out = {"loglik": artifact.loglik_rows(x, event=event, X=X),  # validates x, event, X
           "cdf": artifact.cdf(x, X)}
    if X is None:  # quantiles do not depend on the row: compute them once
        levels = artifact.ppf(np.array(list(QUANTILES.values())))
        out.update({k: np.full(len(x), v) for k, v in zip(QUANTILES, levels)})
    else:
        out.update({k: artifact.ppf(np.full(len(x), q), X) for k, q in QUANTILES.items()})
    return pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in out.items()},
                        index=frame.index)


class MleopsPyfunc(mlflow.pyfunc.PythonModel):
    """Stateless wrapper: everything it knows comes from the ``model`` artifact (model.json)."""

    def __init__(self) -> None:
        self.artifact: ModelArtifact | None = None

    def __getstate__(self) -> dict:
        # Should anyone log the instance itself (MLflow would cloudpickle it), parameters stay
        # out of the pickle: they live in model.json only.
        return {**self.__dict__, "artifact": None}

    def load_context(self, context) -> None:
        try:
            path = context.artifacts["model"]
        except (KeyError, TypeError):
            raise DataError("pyfunc model has no 'model' artifact (model.json)") from None
        self.artifact = ModelArtifact.load(path)

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.artifact is None:
            if context is None:
                raise DataError("model not loaded: call load_context first")
            self.load_context(context)
        return predict_frame(self.artifact, model_input)


_CODE = ("from mlflow.models import set_model\n"
         "from mleops.registry.pyfunc import MleopsPyfunc\n\n"
         "set_model(MleopsPyfunc())\n")


class _NoSignatureNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # the model takes any table on purpose
        return "infer model signature" not in record.getMessage()


def log_pyfunc_model(run_id: str, model_json: str, workdir: str) -> str:
    """Log the pyfunc under ``run_id`` as "models from code" (no pickle); its MLflow model id.

    Logs to the current (global) tracking URI. The model directory holds a three-line script,
    ``artifacts/model.json`` and MLflow's metadata; requirements are given explicitly, which
    spares MLflow a slow dependency-inference subprocess.
    """
    return log_code_model(run_id, _CODE, {"model": model_json}, workdir)


def log_code_model(run_id: str, code_text: str, artifacts: dict[str, str], workdir: str,
                   signature=None) -> str:
    """Log ``code_text`` (a script ending in ``set_model(...)``) with ``artifacts`` as a
    pyfunc "model from code" under ``run_id``; its MLflow model id."""
    code = os.path.join(workdir, "mleops_model.py")
    with open(code, "w") as f:
        f.write(code_text)
    quiet, logger = _NoSignatureNoise(), logging.getLogger("mlflow.pyfunc")
    logger.addFilter(quiet)
    try:
        with mlflow.start_run(run_id=run_id, nested=True), _only_our_packages(), \
                warnings.catch_warnings():
            # an input example would make MLflow load and run the model while logging it
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = mlflow.pyfunc.log_model(
                name="model", python_model=code, artifacts=artifacts, signature=signature,
                pip_requirements=[f"mlflow=={mlflow.__version__}", f"mleops=={__version__}"])
    finally:
        logger.removeFilter(quiet)
    return info.model_id


@contextlib.contextmanager
def _only_our_packages():
    """MLflow checks the given requirements against the environment through a map of every
    installed distribution's modules, built on first use by reading each one's RECORD (1.3 s
    of a pipeline task in this environment). The requirements are the installed mlflow and
    mleops, pinned as installed: while this model is logged, the map holds just those two,
    and it is put back unbuilt afterwards, so another model logged later in the process
    infers its requirements from the full map."""
    from mlflow.utils import requirements_utils as ru

    if getattr(ru, "_MODULES_TO_PACKAGES", ...) is not None:  # built already, or renamed
        yield
        return
    ru._MODULES_TO_PACKAGES = {"mlflow": ["mlflow"], "mleops": ["mleops"]}
    try:
        yield
    finally:
        ru._MODULES_TO_PACKAGES = ru._PACKAGES_TO_MODULES = None
