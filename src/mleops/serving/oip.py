"""Open Inference Protocol (v2) adapter: the likelihood service as a ``kserve.Model``.

The same :class:`~mleops.serving.service.LikelihoodService` the Seldon adapter wraps does the
work; this module only maps OIP tensors to its columns and back, for REST and gRPC alike
(KServe decodes both into an ``InferRequest``). Inputs are named: ``x`` (the response),
optional ``event`` (1 observed, 0 right-censored), and one tensor per covariate named after
its feature; each of shape ``[n]`` or ``[n, 1]``. ``parameters.output`` picks ``loglik``
(default), ``cdf``, ``sf`` or ``quantiles`` (levels in ``parameters.quantiles``: a list over
REST, or a comma-separated string, which gRPC's parameter types also carry); the output
tensor is named after what it holds. Every refusal is an :class:`OipError` with the HTTP
status to answer (KServe maps it to gRPC ``INVALID_ARGUMENT``), checked before any tensor is
built, so no request can make the server answer 500.

A fleet (one model directory holding thousands of keyed models of one family) is served as
ONE model: each row also carries its key, one ``BYTES`` tensor per key column named after it
(shape ``[n]`` or ``[n, 1]``; JSON data a list of strings, gRPC ``bytes_contents`` or raw
bytes). An integer tensor (``INT64`` ...) of keys is taken too, each value as its decimal
string (the fleet matches keys as strings: store id 17 is the key ``"17"``); a floating-point
or boolean key tensor is refused.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ModelNotFound
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse, to_http_parameters
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mleops.serving.contract import OUTPUTS
from mleops.serving.service import (
    COUNTERS,
    GAUGES,
    METRIC_LABELS,
    LikelihoodService,
    ServingError,
)

NUMERIC = ("FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32",
           "UINT16", "UINT8")
INTEGER = tuple(t for t in NUMERIC if "INT" in t)


class OipError(InvalidInput):
    """A request refused with ``status`` (4xx); an InvalidInput so gRPC answers
    INVALID_ARGUMENT with the same message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class VersionNotFound(ModelNotFound):
    """A version this server does not serve: 404 over REST, NOT_FOUND over gRPC."""

    def __init__(self, model: str, version: str, serving: str):
        super().__init__(model)
        self.reason = (f"model {model!r} has no version {version!r} here (serving version "
                       f"{serving!r})")


def _flat(data: Any) -> list:
    """Row-major values of a (possibly nested) JSON tensor; refuses anything not a number."""
    out, stack = [], [data]
    while stack:
        v = stack.pop()
        if isinstance(v, list | tuple):
            stack.extend(reversed(v))
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise OipError(f"tensor values must be numbers, got {type(v).__name__} {v!r}")
        else:
            out.append(v)
    return out


def _is_json(inp) -> bool:
    """Values given as a JSON list (REST) or typed gRPC contents, not raw bytes: KServe leaves
    ``data`` an empty list beside gRPC ``raw_input_contents`` (what tritonclient sends)."""
    return isinstance(inp.data, list) and getattr(inp, "_raw_data", None) is None


def _check_shape(name: str, shape: list, max_rows: int) -> None:
    if not 1 <= len(shape) <= 2 or not all(isinstance(s, int) and s >= 1 for s in shape) or \
            (len(shape) == 2 and shape[1] != 1):
        raise OipError(f"input {name!r} has shape {shape}; expected [n] or [n, 1] with n >= 1")
    if shape[0] > max_rows:
        raise OipError(f"input {name!r} has {shape[0]} rows; the limit is {max_rows}", 413)


def _tensor(inp, max_rows: int) -> np.ndarray:
    """One input tensor as a float64 column, after checking what it claims."""
    name, shape, dtype = inp.name, list(inp.shape or []), inp.datatype
    if dtype not in NUMERIC:
        raise OipError(f"input {name!r} has datatype {dtype}; numeric tensors only "
                       f"({', '.join(NUMERIC[:2])}, ...)")
    _check_shape(name, shape, max_rows)
    if _is_json(inp):  # JSON or typed gRPC contents
        values = np.asarray(_flat(inp.data), np.float64)
    else:
        try:  # gRPC contents, raw bytes (gRPC or KServe's binary extension)
            values = np.asarray(inp.as_numpy(), np.float64).ravel()
        except Exception as e:  # wrong byte count, unknown datatype
            raise OipError(f"input {name!r} cannot be read as {dtype} {shape}: {e}") from None
    if values.size != shape[0]:
        raise OipError(f"input {name!r} has shape {shape} but {values.size} value(s)")
    return values


def request_columns(request: InferRequest, expected: list[str], max_rows: int
                    ) -> tuple[np.ndarray, list[str]]:
    """(rows x columns matrix, column names) from a request's named input tensors."""
    inputs = list(request.inputs or [])
    if not inputs:
        raise OipError(f"request has no inputs; expected tensors {expected} (+ optional "
                       "'event')")
    names = [i.name for i in inputs]
    allowed = [*expected, "event"]
    unknown = [n for n in names if n not in allowed]
    if unknown or len(set(names)) != len(names):
        what = f"unknown input(s) {unknown}" if unknown else f"repeated input names {names}"
        raise OipError(f"{what}; this model takes {expected} (+ optional 'event')")
    missing = [n for n in expected if n not in names]
    if missing:
        raise OipError(f"request lacks input(s) {missing}; expected {expected}")
    cols = [_tensor(i, max_rows) for i in inputs]
    if len({c.size for c in cols}) != 1:
        raise OipError("inputs have different row counts: " +
                       ", ".join(f"{n}={c.size}" for n, c in zip(names, cols)))
    return np.column_stack(cols), names


def _leaves(data: Any) -> list:
    out, stack = [], [data]
    while stack:
        v = stack.pop()
        if isinstance(v, list | tuple):
            stack.extend(reversed(v))
        else:
            out.append(v)
    return out


def _key_tensor(inp, max_rows: int) -> np.ndarray:
    """One key tensor as an array of strings (checked before anything is looked up)."""
    name, shape, dtype = inp.name, list(inp.shape or []), inp.datatype
    if dtype != "BYTES" and dtype not in INTEGER:
        raise OipError(f"key input {name!r} has datatype {dtype}; keys are BYTES tensors (one "
                       "string per row; integer tensors are read as decimal strings)")
    _check_shape(name, shape, max_rows)
    try:
        values = _leaves(inp.data) if _is_json(inp) else inp.as_numpy().ravel().tolist()
    except Exception as e:  # wrong byte count, malformed length prefixes
        raise OipError(f"key input {name!r} cannot be read as {dtype} {shape}: {e}") from None
    if len(values) != shape[0]:
        raise OipError(f"key input {name!r} has shape {shape} but {len(values)} value(s)")
    out = []
    for i, v in enumerate(values):
        if dtype == "BYTES" and isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise OipError(f"key input {name!r}: row {i} is not UTF-8") from None
        if dtype == "BYTES" and not isinstance(v, str):
            raise OipError(f"key input {name!r} (BYTES) holds {type(v).__name__} {v!r} at row "
                           f"{i}; send each key as a string")
        if dtype != "BYTES":
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise OipError(f"key input {name!r} ({dtype}) holds {type(v).__name__} {v!r} "
                               f"at row {i}; send integers, or strings as BYTES")
            v = str(int(v))
        out.append(v)
    return np.array(out, dtype=object)


def request_fleet_columns(request: InferRequest, key_names: list[str], max_rows: int
                          ) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """(rows x columns matrix, column names, one key array per key column) of a request to
    a fleet: a key tensor per key column, ``x``, optional ``event``, all of one length."""
    inputs = list(request.inputs or [])
    takes = f"key input(s) {key_names} (BYTES) and 'x' (+ optional 'event')"
    if not inputs:
        raise OipError(f"request has no inputs; this fleet takes {takes}")
    names = [i.name for i in inputs]
    unknown = [n for n in names if n not in [*key_names, "x", "event"]]
    if unknown or len(set(names)) != len(names):
        what = f"unknown input(s) {unknown}" if unknown else f"repeated input names {names}"
        raise OipError(f"{what}; this fleet takes {takes}")
    if missing := [n for n in key_names if n not in names]:
        raise OipError(f"request lacks key input(s) {missing}: this fleet is keyed by "
                       f"{key_names}; send each as a BYTES tensor, one string per row")
    if "x" not in names:
        raise OipError(f"request lacks input(s) ['x']; this fleet takes {takes}")
    keys = {i.name: _key_tensor(i, max_rows) for i in inputs if i.name in key_names}
    numeric = [i for i in inputs if i.name not in key_names]
    cols = [_tensor(i, max_rows) for i in numeric]
    sizes = {**{i.name: c.size for i, c in zip(numeric, cols)},
             **{n: k.size for n, k in keys.items()}}
    if len(set(sizes.values())) != 1:
        raise OipError("inputs have different row counts: " +
                       ", ".join(f"{n}={sizes[n]}" for n in names))
    return np.column_stack(cols), [i.name for i in numeric], [keys[k] for k in key_names]


def request_options(parameters: Any) -> tuple[str, Any]:
    """(output, quantile levels or None) from request parameters (REST dict or gRPC map)."""
    params = to_http_parameters(parameters) if parameters else {}
    output = params.get("output", "loglik")
    if output not in OUTPUTS:
        raise OipError(f"unknown output {output!r}; choose one of {list(OUTPUTS)}")
    levels = params.get("quantiles")
    if isinstance(levels, str):
        try:
            levels = [float(q) for q in levels.split(",")]
        except ValueError:
            raise OipError(f"parameters.quantiles {levels!r} is not a comma-separated list of "
                           "numbers") from None
        if not all(math.isfinite(q) for q in levels):
            raise OipError("quantile levels must lie strictly in (0, 1)")
    return output, levels


class LikelihoodModel(Model):
    """A loaded model version served under its registered name (KServe's model name)."""

    def __init__(self, service: LikelihoodService):
        super().__init__(service.model_name)
        self.service = service
        self.ready = service.ready

    def load(self) -> bool:
        if not self.service.ready:
            self.service.load()
        self.ready = True
        return True

    @property
    def version(self) -> str:
        return self.service.model_version

    def get_input_types(self) -> list[dict]:
        """A fleet's key tensor(s) (BYTES), then ``x``, ``event`` (optional; all rows observed
        without it), then covariates."""
        return [{"name": k, "datatype": "BYTES", "shape": [-1]}
                for k in self.service.key_names] + [
            {"name": n, "datatype": "FP64", "shape": [-1]}
            for n in ["x", "event", *self.service.covariates]]

    def get_output_types(self) -> list[dict]:
        """One tensor, chosen by ``parameters.output``; quantiles has a column per level."""
        out = [{"name": o, "datatype": "FP64", "shape": [-1, -1] if o == "quantiles" else [-1]}
               for o in OUTPUTS]
        if self.service.canary is not None:  # a fleet canary's loglik answer has these too
            out += [{"name": "arm", "datatype": "INT64", "shape": [-1]},
                    {"name": "key_index", "datatype": "INT64", "shape": [-1]},
                    {"name": "loglik_canary", "datatype": "FP64", "shape": [-1]}]
        return out

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        if payload.model_version and payload.model_version != self.version:
            raise VersionNotFound(self.name, payload.model_version, self.version)
        svc = self.service
        try:
            output, levels = request_options(payload.parameters)
            if svc.key_names:  # a fleet: every row carries its key
                X, names, keys = request_fleet_columns(payload, svc.key_names, svc.max_rows)
                if svc.canary is not None and output == "loglik":
                    rid = payload.id or str(uuid.uuid4())
                    return self._canary(payload, rid, svc.evaluate_canary(X, names, keys, rid))
                out, cols = svc.evaluate(X, names, output, levels, keys=keys)
            else:
                X, names = request_columns(payload, ["x", *svc.covariates], svc.max_rows)
                out, cols = svc.evaluate(X, names, output, levels)
        except ServingError as e:
            raise OipError(str(e), e.status) from None
        except OipError:
            svc.count_rejected()
            raise
        params = {"levels": ",".join(c[1:] for c in cols)} if output == "quantiles" else None
        tensor = InferOutput(name=output, shape=list(out.shape), datatype="FP64",
                             data=out.ravel().tolist(), parameters=params)
        return self._response(payload, payload.id or str(uuid.uuid4()), [tensor])

    def _response(self, payload: InferRequest, rid: str, outputs: list) -> InferResponse:
        # gRPC raw inputs get raw outputs back (tritonclient reads no typed contents); REST
        # answers JSON tensors whatever binary_data_output asks (the extension allows it)
        raw = bool(payload.from_grpc and payload.use_binary_outputs)
        return InferResponse(response_id=rid, model_name=self.name, model_version=self.version,
                             infer_outputs=outputs, from_grpc=payload.from_grpc,
                             use_binary_outputs=raw)

    def _canary(self, payload: InferRequest, rid: str, ans) -> InferResponse:
        """A fleet canary's answer: ``loglik``, and per row its ``arm`` (1 candidate, 0
        champion, -1 no evidence), ``key_index`` (the key's row in the candidate's table) and
        in shadow mode ``loglik_canary``: what a router needs to keep per-key evidence."""
        n = [int(ans.loglik.size)]
        outs = [InferOutput(name="loglik", shape=n, datatype="FP64",
                            data=ans.loglik.tolist()),
                InferOutput(name="arm", shape=n, datatype="INT64", data=ans.arm.tolist()),
                InferOutput(name="key_index", shape=n, datatype="INT64",
                            data=ans.key_index.tolist())]
        if ans.loglik_canary is not None:
            outs.append(InferOutput(name="loglik_canary", shape=n, datatype="FP64",
                                    data=ans.loglik_canary.tolist()))
        return self._response(payload, rid, outs)


class TotalsCollector:
    """The service's totals as Prometheus metrics, read at scrape time (so exact: no flush
    interval, no second copy), named and labelled as the Seldon server's."""

    def __init__(self, service: LikelihoodService):
        self.service = service

    def collect(self):
        svc = self.service
        series = [([svc.model_name, svc.model_version], svc.snapshot())]
        if svc.canary is not None:  # a fleet canary: the candidate's rows under its version
            series.append(([svc.model_name, svc.canary_version], svc.snapshot(canary=True)))
        for key, field in COUNTERS.items():
            m = CounterMetricFamily(key, f"mleops {field.replace('_', ' ')}",
                                    labels=METRIC_LABELS)
            for values, t in series:
                m.add_metric(values, float(getattr(t, field)))
            yield m
        for key, field in GAUGES.items():
            m = GaugeMetricFamily(key, f"mleops {field.replace('_', ' ')} (cumulative)",
                                  labels=METRIC_LABELS)
            for values, t in series:
                m.add_metric(values, float(getattr(t, field)))
            yield m


__all__ = ["LikelihoodModel", "OipError", "TotalsCollector", "VersionNotFound", "request_columns",
           "request_fleet_columns", "request_options"]
