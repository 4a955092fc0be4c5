"""Calling model servers: Seldon's v1 REST protocol and the Open Inference Protocol v2 (REST).

What a cluster endpoint speaks too (a SeldonDeployment, a KServe InferenceService). Both
functions return (HTTP status, JSON body) and never raise for an HTTP error status, so a CI
step can print the server's own message; connection failures raise ``OSError``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mleops.serving.contract import OUTPUTS


def _post(url: str, payload: dict, timeout: float) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except json.JSONDecodeError:
            return e.code, {"error": text}


def predict(url: str, payload: dict, *, timeout: float = 30.0) -> tuple[int, dict]:
    """POST a Seldon message to ``url``; returns (HTTP status, JSON body)."""
    return _post(f"{url.rstrip('/')}/api/v1.0/predictions", payload, timeout)


def seldon_message(rows: list, *, names: list[str] | None = None, output: str | None = None,
                   quantiles: list[float] | None = None) -> dict:
    """A Seldon v1 message for ``rows`` (one list of values per row, or bare values)."""
    msg: dict[str, Any] = {"data": {"ndarray": rows, **({"names": names} if names else {})}}
    tags = {k: v for k, v in (("output", output), ("quantiles", quantiles)) if v is not None}
    if tags:
        msg["meta"] = {"tags": tags}
    return msg


def oip_request(rows: list, *, names: list[str] | None = None, output: str | None = None,
                quantiles: list[float] | None = None) -> dict:
    """An OIP v2 inference request: one FP64 tensor per column (``x``, optional ``event``,
    covariates by name; ``names`` says which column is which, default ``x`` alone)."""
    cols = [list(r) if isinstance(r, list | tuple) else [r] for r in rows]
    names = names or ["x"]
    if any(len(r) != len(names) for r in cols):
        raise ValueError(f"every row needs {len(names)} value(s) for columns {names}")
    inputs = [{"name": n, "datatype": "FP64", "shape": [len(cols)],
               "data": [r[j] for r in cols]} for j, n in enumerate(names)]
    params: dict[str, Any] = {}
    if output is not None:
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; choose one of {list(OUTPUTS)}")
        params["output"] = output
    if quantiles is not None:
        params["quantiles"] = ",".join(f"{q:g}" for q in quantiles)
    return {"inputs": inputs, **({"parameters": params} if params else {})}


def infer(url: str, model: str, payload: dict, *, version: str | None = None,
          timeout: float = 30.0) -> tuple[int, dict]:
    """POST an OIP v2 inference request for ``model`` (and ``version``) to ``url``."""
    path = f"/v2/models/{urllib.parse.quote(model, safe='')}"
    if version:
        path += f"/versions/{urllib.parse.quote(version, safe='')}"
    return _post(f"{url.rstrip('/')}{path}/infer", payload, timeout)


def served_models(url: str, *, timeout: float = 10.0) -> list[str]:
    """The model names an OIP v2 server serves (its one model, for an mleops server)."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/v2/models", timeout=timeout) as r:
        return list(json.loads(r.read()).get("models", []))


__all__ = ["infer", "oip_request", "predict", "seldon_message", "served_models"]
