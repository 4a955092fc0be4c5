"""The two wire protocols a local data plane speaks: the Open Inference Protocol v2 (KServe's
ModelServer, the default: it runs in this environment) and Seldon's v1 messages (the Seldon
server, in its own environment).

The router, the replayer and the plane's model servers differ only here: where predictions
are posted, what a well-formed request looks like before it is routed, where the per-row
log-likelihoods sit in an answer, how an error is written, and which server process serves a
version. Everything that decides (routing, accounting, evidence) is the same for both.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mleops.serving.contract import ContractError, Limits, parse_body, seldon_request
from mleops.serving.guard import status_body

PROTOCOLS = ("v2", "v1")
DEFAULT_PROTOCOL = "v2"


class _Wire:
    predict_path: str

    def route(self, path: str) -> str | None:
        """The path to forward a client's POST to, or None (not a prediction route)."""
        return self.predict_path if path == self.predict_path else None

    def metadata_paths(self) -> tuple[str, ...]:
        """GETs answered by the champion (what a client asks before inferring)."""
        return ()


class SeldonV1(_Wire):
    """Seldon Core v1 messages on ``/api/v1.0/predictions``."""

    name = "v1"
    predict_path = "/api/v1.0/predictions"
    health_paths = ("/health", "/health/status", "/health/ping")

    def __init__(self, model: str = ""):
        self.model = model

    def check(self, body: bytes, limits: Limits) -> None:
        seldon_request(parse_body(body, limits), limits)

    def loglik_rows(self, body: bytes) -> list[float] | None:
        """Per-row log-likelihoods of an answer, or None if it carries another output."""
        try:
            data = json.loads(body)["data"]
            if data.get("names") != ["loglik"]:
                return None
            values = (data["tensor"]["values"] if "tensor" in data
                      else [r[0] if isinstance(r, list) else r for r in data["ndarray"]])
            return [float(v) for v in values]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None

    def error(self, status: int, message: str, reason: str = "MLEOPS_BAD_REQUEST") -> dict:
        return status_body(status, message, reason)

    def request(self, names: list[str], rows: np.ndarray) -> dict:
        return {"data": {"names": list(names), "ndarray": np.asarray(rows).tolist()}}

    def server(self, model_dir: str, *, version: str, threads: int, log_path: str | None):
        from mleops.serving.process import LocalServer

        return LocalServer(model_dir, threads=threads, log_path=log_path)


class OipV2(_Wire):
    """Open Inference Protocol v2 REST: ``POST /v2/models/{model}/infer``; every version of
    the plane's model is served under the model's registered name."""

    name = "v2"
    health_paths = ("/v2/health/live", "/v2/health/ready", "/health")

    def __init__(self, model: str):
        self.model = model
        self.predict_path = f"/v2/models/{model}/infer"

    def metadata_paths(self) -> tuple[str, ...]:
        return (f"/v2/models/{self.model}", f"/v2/models/{self.model}/ready", "/v2/models",
                "/v2")

    def check(self, body: bytes, limits: Limits) -> None:
        """The shape of an OIP request, bounded (the model servers check the tensors)."""
        doc = parse_body(body, limits)
        inputs = doc.get("inputs") if isinstance(doc, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise ContractError("not an OIP inference request: 'inputs' must be a non-empty "
                                "list of tensors")
        if len(inputs) > limits.max_columns:
            raise ContractError(f"{len(inputs)} input tensors exceed the limit of "
                                f"{limits.max_columns}", 413)
        for i, t in enumerate(inputs):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or \
                    not isinstance(t.get("datatype"), str) or \
                    not isinstance(t.get("shape"), list) or "data" not in t:
                raise ContractError(f"not an OIP inference request: inputs[{i}] needs 'name', "
                                    "'datatype', 'shape' and 'data'")
            shape = t["shape"]
            if shape and isinstance(shape[0], int) and shape[0] > limits.max_rows:
                raise ContractError(f"input {t['name']!r} has {shape[0]} rows; the limit is "
                                    f"{limits.max_rows}", 413)

    def loglik_rows(self, body: bytes) -> list[float] | None:
        try:
            outputs = json.loads(body)["outputs"]
            if len(outputs) != 1 or outputs[0].get("name") != "loglik":
                return None
            return [float(v) for v in outputs[0]["data"]]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None

    def error(self, status: int, message: str, reason: str = "") -> dict:
        return {"error": message}

    def request(self, names: list[str], rows: np.ndarray) -> dict:
        rows = np.asarray(rows, np.float64)
        return {"inputs": [{"name": n, "datatype": "FP64", "shape": [rows.shape[0]],
                            "data": rows[:, j].tolist()} for j, n in enumerate(names)]}

    def server(self, model_dir: str, *, version: str, threads: int, log_path: str | None):
        from mleops.serving.process import OipServer

        return OipServer(model_dir, model_name=self.model, model_version=version,
                         log_path=log_path)


Wire = SeldonV1 | OipV2


def wire(protocol: str, model: str) -> Any:
    """The wire protocol ``protocol`` ("v2" or "v1") for a plane serving ``model``."""
    if protocol == "v2":
        return OipV2(model)
    if protocol == "v1":
        return SeldonV1(model)
    raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")


__all__ = ["DEFAULT_PROTOCOL", "OipV2", "PROTOCOLS", "SeldonV1", "Wire", "wire"]
