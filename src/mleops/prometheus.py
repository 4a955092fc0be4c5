"""The one Prometheus HTTP API client: instant queries with timeouts and precise errors.

Monitor and rollout each own their PromQL; this module only speaks the API
(``GET /api/v1/query``) and turns every way it can fail into a :class:`PrometheusError`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from mleops.errors import MleopsError


class PrometheusError(MleopsError, RuntimeError):
    """Live metrics could not be read (Prometheus unreachable or a malformed answer)."""


def query_prometheus(url: str, promql: str, *, timeout: float = 10.0,
                     at: float | None = None) -> float | list:
    """Instant query via ``GET /api/v1/query``: a float for a scalar result, else a list of
    ``(labels, value)`` (vector) or ``(labels, [(t, value), ...])`` (matrix).

    ``at`` (unix seconds) evaluates several queries at one instant: a consistent snapshot.
    """
    params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
    full = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(full, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:  # Prometheus answers 400/422 with a JSON error
        body = e.read()
        if not body.lstrip().startswith(b"{"):
            raise PrometheusError(f"Prometheus at {url}: HTTP {e.code} for {promql!r}") from None
    except (urllib.error.URLError, OSError) as e:
        raise PrometheusError(f"Prometheus at {url} unreachable: "
                           f"{getattr(e, 'reason', None) or e}") from None
    try:
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise PrometheusError(f"Prometheus at {url} rejected {promql!r}: "
                               f"{doc.get('errorType', '')} {doc.get('error', doc)}".strip())
        kind, result = doc["data"]["resultType"], doc["data"]["result"]
        if kind == "scalar":
            return float(result[1])
        if kind == "vector":
            return [(dict(r["metric"]), float(r["value"][1])) for r in result]
        if kind == "matrix":
            return [(dict(r["metric"]), [(float(t), float(v)) for t, v in r["values"]])
                    for r in result]
        raise KeyError(f"resultType {kind!r}")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise PrometheusError(f"Prometheus at {url}: malformed answer to {promql!r}: {e}") from None


__all__ = ["PrometheusError", "query_prometheus"]
