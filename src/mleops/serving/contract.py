"""The request contract of a model server, checked in one place before any computation.

Every protocol adapter (the Seldon v1 wrapper, the router in front of it) hands the raw body
here first, so a malformed request is refused with a 4xx naming the problem instead of
reaching framework code that would answer 500 (ragged rows, a tensor whose shape does not
match its values, ``meta`` that is not an object, 10k-deep JSON, quantile levels that are not
numbers). The work a request may ask for is bounded: rows, columns, quantile levels and
rows x levels, all settings with defaults (:class:`Limits`, ``MLEOPS_MAX_*`` variables).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from typing import Any

OUTPUTS = ("loglik", "cdf", "sf", "quantiles")
DEFAULT_QUANTILES = (0.05, 0.5, 0.95)
JSON_TYPES = ("application/json",)


class ContractError(ValueError):
    """A request that breaks the contract; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Bounds on one request's work. Each is also read from ``MLEOPS_<NAME upper-case>``."""

    max_rows: int = 10_000
    max_columns: int = 64
    max_quantiles: int = 64
    max_cells: int = 200_000  # rows x quantile levels
    max_json_depth: int = 10
    max_body_bytes: int = 8 << 20

    @classmethod
    def from_env(cls, **overrides: int) -> Limits:
        values = {}
        for f in fields(cls):
            raw = overrides.get(f.name) or os.environ.get(f"MLEOPS_{f.name.upper()}")
            if raw is not None:
                values[f.name] = int(raw)
        return cls(**values)


@dataclass(frozen=True)
class Request:
    rows: list  # 2-D list of numbers, rectangular
    names: list[str] | None
    output: str
    quantiles: tuple[float, ...] | None


def check_content_type(value: str | None) -> None:
    """JSON only: a form-encoded or text body is what a cross-site form post sends."""
    kind = (value or "").split(";", 1)[0].strip().lower()
    if kind not in JSON_TYPES:
        raise ContractError(f"Content-Type header must be application/json, got "
                            f"{value!r}" if value else
                            "Content-Type header missing: send application/json", 415)


def parse_body(body: bytes, limits: Limits) -> Any:
    if len(body) > limits.max_body_bytes:
        raise ContractError(f"request body of {len(body)} bytes exceeds the limit of "
                            f"{limits.max_body_bytes}", 413)
    try:
        doc = json.loads(body)
    except RecursionError:
        raise ContractError(f"JSON nested deeper than {limits.max_json_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ContractError(f"body is not valid JSON: {e}") from None
    _check_depth(doc, limits.max_json_depth)
    return doc


def _check_depth(doc: Any, limit: int) -> None:
    level, frontier = 0, [doc] if isinstance(doc, dict | list) else []
    while frontier:
        level += 1
        if level > limit:
            raise ContractError(f"JSON nested deeper than {limit} levels")
        nxt: list = []
        for v in frontier:
            items = v.values() if isinstance(v, dict) else v
            nxt.extend(x for x in items if isinstance(x, dict | list))
        frontier = nxt


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _object(doc: Any, where: str) -> dict:
    if not isinstance(doc, dict):
        raise ContractError(f"{where} must be a JSON object, got {type(doc).__name__}")
    return doc


def seldon_request(doc: Any, limits: Limits) -> Request:
    """A Seldon v1 message (``data.ndarray`` or ``data.tensor``, options in ``meta.tags``)."""
    doc = _object(doc, "the request")
    unknown = sorted(set(doc) - {"data", "meta"})
    if unknown:
        raise ContractError(f"unsupported field(s) {unknown}: this model takes numeric rows "
                            "in 'data' (ndarray or tensor) and options in 'meta.tags'")
    if "data" not in doc:
        raise ContractError("request has no 'data' (send data.ndarray or data.tensor)")
    data = _object(doc["data"], "'data'")
    meta = _object(doc.get("meta", {}), "'meta'")
    tags = _object(meta.get("tags", {}), "'meta.tags'")
    kinds = [k for k in ("ndarray", "tensor") if k in data]
    extra = sorted(set(data) - {"ndarray", "tensor", "names"})
    if extra or len(kinds) != 1:
        raise ContractError("'data' needs exactly one of 'ndarray' or 'tensor' (and optional "
                            f"'names'), got keys {sorted(data)}")
    rows = (_ndarray(data["ndarray"], limits) if kinds[0] == "ndarray"
            else _tensor(data["tensor"], limits))
    names = _names(data.get("names"), len(rows[0]))
    output, quantiles = options(tags, len(rows), limits)
    return Request(rows, names, output, quantiles)


def _bounded_rows(n: int, limits: Limits) -> None:
    if n == 0:
        raise ContractError("payload has no rows")
    if n > limits.max_rows:
        raise ContractError(f"payload has {n} rows; the limit is {limits.max_rows}", 413)


def _numbers(values: list, where: str) -> None:
    for i, v in enumerate(values):
        if not _is_number(v):
            what = "boolean" if isinstance(v, bool) else type(v).__name__
            raise ContractError(f"{where} value {i} is {what} {v!r}; values must be numbers")
        if isinstance(v, int) and abs(v) > 2 ** 53:
            raise ContractError(f"{where} value {i} ({v}) is too large for a float64 exactly")


def _ndarray(a: Any, limits: Limits) -> list:
    if not isinstance(a, list):
        raise ContractError(f"data.ndarray must be a list of rows, got {type(a).__name__}")
    _bounded_rows(len(a), limits)
    if all(not isinstance(r, list) for r in a):  # one column, one value per row
        _numbers(a, "data.ndarray")
        return [[v] for v in a]
    width = len(a[0]) if isinstance(a[0], list) else -1
    for i, r in enumerate(a):
        if not isinstance(r, list) or len(r) != width:
            raise ContractError(f"data.ndarray is not rectangular: row {i} is "
                                f"{_describe(r)}, row 0 has {width} value(s)")
        _numbers(r, f"data.ndarray row {i}")
    if width == 0:
        raise ContractError("data.ndarray rows are empty")
    if width > limits.max_columns:
        raise ContractError(f"payload has {width} columns; the limit is {limits.max_columns}",
                            413)
    return a


def _describe(r: Any) -> str:
    return f"a list of {len(r)}" if isinstance(r, list) else f"{type(r).__name__} {r!r}"


def _tensor(t: Any, limits: Limits) -> list:
    t = _object(t, "data.tensor")
    shape, values = t.get("shape"), t.get("values")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 2 or \
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ContractError(f"data.tensor.shape must be 1 or 2 positive integers, got {shape!r}")
    if not isinstance(values, list):
        raise ContractError("data.tensor.values must be a list of numbers")
    _bounded_rows(shape[0], limits)
    width = shape[1] if len(shape) == 2 else 1
    if width > limits.max_columns:
        raise ContractError(f"payload has {width} columns; the limit is {limits.max_columns}",
                            413)
    if len(values) != shape[0] * width:
        raise ContractError(f"data.tensor.shape {shape} needs {shape[0] * width} values, got "
                            f"{len(values)}")
    _numbers(values, "data.tensor")
    return [values[i * width:(i + 1) * width] for i in range(shape[0])]


def _names(names: Any, width: int) -> list[str] | None:
    if names is None or names == []:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ContractError("data.names must be a list of column names (strings)")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ContractError(f"data.names repeats {dup}: each column needs its own name")
    if len(names) != width:
        raise ContractError(f"{len(names)} names for {width} columns")
    return names


def options(tags: dict, n_rows: int, limits: Limits) -> tuple[str, tuple[float, ...] | None]:
    """(output, quantile levels) from request tags; levels only for ``quantiles``."""
    output = tags.get("output", "loglik")
    if output not in OUTPUTS:
        raise ContractError(f"unknown output {output!r}; choose one of {list(OUTPUTS)}")
    raw = tags.get("quantiles")
    if raw is None:
        return output, (DEFAULT_QUANTILES if output == "quantiles" else None)
    if not isinstance(raw, list | tuple) or not raw or not all(_is_number(q) for q in raw):
        raise ContractError(f"meta.tags.quantiles must be a non-empty list of numbers, "
                            f"got {raw!r}")
    if len(raw) > limits.max_quantiles:
        raise ContractError(f"{len(raw)} quantile levels; the limit is {limits.max_quantiles}",
                            413)
    if not all(0 < q < 1 and math.isfinite(q) for q in raw):
        raise ContractError("quantile levels must lie strictly in (0, 1)")
    if n_rows * len(raw) > limits.max_cells:
        raise ContractError(f"{n_rows} rows x {len(raw)} levels = {n_rows * len(raw)} values; "
                            f"the limit is {limits.max_cells}", 413)
    return output, tuple(float(q) for q in raw)


__all__ = ["ContractError", "DEFAULT_QUANTILES", "Limits", "OUTPUTS", "Request",
           "check_content_type", "options", "parse_body", "seldon_request"]
