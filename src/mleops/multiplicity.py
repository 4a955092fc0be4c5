"""False-discovery control across the keys of a fleet: e-BH and BH (numpy only: the fleet
gate and the fleet rollout's kernels both select keys with it).

A fleet gate asks thousands of "is this key's candidate worse?" questions at once. Testing
each at 5% would call dozens of equally good keys worse; controlling the false discovery
rate (the expected share of wrong "worse" calls among all "worse" calls) keeps the errors a
fixed fraction of the discoveries instead.

* ``e_bh`` (Wang & Ramdas 2022) takes e-values (non-negative, E[e] <= 1 under the null) and
  controls the FDR at ``q`` under ARBITRARY dependence between keys, with no correction.
* ``bh`` (Benjamini & Hochberg 1995) takes valid p-values and controls the FDR at ``q`` when
  they are independent or positively regression dependent (PRDS); usually more powerful.

Untested keys (NaN entries: too few rows, new keys) are not hypotheses: they are excluded
from the count K (or m) and never rejected.
"""

from __future__ import annotations

import math

import numpy as np


def _check(values, q: float, what: str) -> np.ndarray:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q) \
            or not 0.0 < q < 1.0:
        raise ValueError(f"q (the target false discovery rate) must lie in (0, 1), got {q!r}")
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: cannot be read as numbers ({e})") from None
    if a.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array, got shape {a.shape}")
    return a


def e_bh(e_values, q: float) -> np.ndarray:
    """Which hypotheses e-BH rejects at FDR ``q``: a boolean array like ``e_values``.

    With K tested hypotheses (finite or +inf e-values; NaN = not tested, excluded from K),
    rejects the k* largest e-values, k* = max{k : e_(k) >= K / (q k)} (e_(k) the k-th
    largest; none if no k qualifies). Valid under arbitrary dependence. Raises ``ValueError``
    on negative e-values, q outside (0, 1) or non-1-D input.
    """
    e = _check(e_values, q, "e_values")
    tested = ~np.isnan(e)
    if (e[tested] < 0).any():
        i = int(np.flatnonzero(tested & (e < 0))[0])
        raise ValueError(f"e_values must be >= 0 (an e-value is a non-negative bet); entry "
                         f"{i} is {e[i]!r}")
    out = np.zeros(e.shape, dtype=bool)
    K = int(tested.sum())
    if K == 0:
        return out
    idx = np.flatnonzero(tested)
    order = idx[np.argsort(-e[idx], kind="stable")]
    k = np.arange(1, K + 1)
    ok = e[order] * q * k >= K  # e_(k) >= K / (q k), without dividing by q k
    if ok.any():
        out[order[: int(np.flatnonzero(ok)[-1]) + 1]] = True
    return out


def bh(p_values, q: float) -> np.ndarray:
    """Which hypotheses Benjamini-Hochberg rejects at FDR ``q``: a boolean array.

    With m tested hypotheses (NaN = not tested, excluded from m), rejects the k* smallest
    p-values, k* = max{k : p_(k) <= q k / m}. FDR <= q needs valid p-values that are
    independent or PRDS across hypotheses; under arbitrary dependence use ``e_bh``. Matches
    ``scipy.stats.false_discovery_control(p, method="bh") <= q``. Raises ``ValueError`` on
    p-values outside [0, 1], q outside (0, 1) or non-1-D input.
    """
    p = _check(p_values, q, "p_values")
    tested = ~np.isnan(p)
    if ((p[tested] < 0) | (p[tested] > 1)).any():
        i = int(np.flatnonzero(tested & ((p < 0) | (p > 1)))[0])
        raise ValueError(f"p_values must lie in [0, 1]; entry {i} is {p[i]!r}")
    out = np.zeros(p.shape, dtype=bool)
    m = int(tested.sum())
    if m == 0:
        return out
    idx = np.flatnonzero(tested)
    order = idx[np.argsort(p[idx], kind="stable")]
    ok = p[order] * m <= q * np.arange(1, m + 1)
    if ok.any():
        out[order[: int(np.flatnonzero(ok)[-1]) + 1]] = True
    return out


__all__ = ["bh", "e_bh"]
