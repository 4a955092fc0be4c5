"""Serving: a protocol-free likelihood service, one adapter per protocol (Seldon v1 in
``seldon``, the Open Inference Protocol v2 on KServe in ``oip``), local server processes,
clients for both, and model directories.

``mleops.serving.seldon`` is what the Seldon model-server image imports; it loads no mlflow,
kfp, click or pandas (checked by tests/test_boundaries.py). ``oip`` imports kserve, so it is
not imported here.
"""

from mleops.serving.client import infer, oip_request, predict, seldon_message
from mleops.serving.contract import DEFAULT_QUANTILES, OUTPUTS, ContractError, Limits
from mleops.serving.model_dir import resolve_model_dir
from mleops.serving.process import LocalServer, OipServer, ServerError, free_port, serving_python
from mleops.serving.service import (
    SERVING_INFO,
    LikelihoodService,
    ServingError,
    Totals,
    stage_model,
)

__all__ = ["ContractError", "DEFAULT_QUANTILES", "Limits", "OUTPUTS", "SERVING_INFO",
           "LikelihoodService", "LocalServer", "OipServer", "ServerError", "ServingError",
           "Totals", "free_port", "infer", "oip_request", "predict", "resolve_model_dir",
           "seldon_message", "serving_python", "stage_model"]
