"""Serving: a protocol-free likelihood service, one adapter per protocol (Seldon), local
server processes, a client, and model directories.

``mleops.serving.seldon`` is what the model-server image imports; it loads no mlflow, kfp,
click or pandas (checked by tests/test_boundaries.py).
"""

from mleops.serving.client import predict
from mleops.serving.contract import DEFAULT_QUANTILES, OUTPUTS, ContractError, Limits
from mleops.serving.model_dir import resolve_model_dir
from mleops.serving.process import LocalServer, ServerError, free_port, serving_python
from mleops.serving.service import (
    SERVING_INFO,
    LikelihoodService,
    ServingError,
    Totals,
    stage_model,
)

__all__ = ["ContractError", "DEFAULT_QUANTILES", "Limits", "OUTPUTS", "SERVING_INFO", "LikelihoodService", "LocalServer",
           "ServerError", "ServingError", "Totals", "free_port", "predict", "resolve_model_dir",
           "serving_python", "stage_model"]
