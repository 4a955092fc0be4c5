"""The evidence kernels of the rollout test: one implementation for every path that decides.

:class:`~mleops.rollout.statistics.SequentialTest` (the controller, row by row) and
:func:`~mleops.rollout.trace.trace` (many simulated streams at once) add the same clipped sums
and turn them into the same mixture e-values and decisions through these functions; the
arrays may carry leading batch axes. See :mod:`mleops.rollout.statistics` for the method.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # typing only: statistics builds on these kernels
    from mleops.rollout.statistics import TestConfig

_RATIOS = np.array([0.8, 1.6, 3.2, 6.4, 0.4, 0.2, 0.1])  # drifts, in units of min_drop
_LOG_W = np.log(np.array([0.75, 0.09, 0.05, 0.03, 0.04, 0.025, 0.015]))
REF_ROWS = 256  # reference block for the clipping levels (pooled over arms)
_MAD_SD = 1.4826  # MAD -> sd for a normal sample
_MEAN_AD_SD = 1.2533  # mean absolute deviation -> sd (fallback when over half the rows tie)
_WIDE = 2.0  # variance sums clip at this many times the mean's clip (see part_sums)
_VAR_FLOOR = 1.0  # per-row sd >= min_drop: finer precision in a short window usually means rare
# rows have not shown up yet (a canary 0.01 worse on 97% of rows, 3 nats better on 3% would
# be rolled back on its first 100 rows 5% of the time); it also keeps identical rows finite


def part_sums(cfg: TestConfig, c: np.ndarray, p: np.ndarray, centre: Any, half: Any
               ) -> np.ndarray:
    """Sums of clipped rows along the last axis, shape (3 parts, 5, ...).

    Parts: paired differences, canary rows, champion rows. Columns: n, sum and sum of squares
    of the rows clipped at ``centre +- half`` (the mean), then of the rows clipped at
    ``_WIDE`` times that (the variance): a clipped outlier still moves the mean by up to
    ``half``, so it must widen the uncertainty by more than its clipped value says, or three
    absurd rows would add up to a push no A/A noise makes.
    """
    centre, half = np.asarray(centre)[..., None], np.asarray(half)[..., None]
    out = np.zeros((3, 5) + c.shape[:-1])
    for k, x in ((0, c - p), (1, c[..., :0]), (2, p[..., :0])) if cfg.mode == "paired" else (
            (1, c), (2, p)):
        narrow = np.clip(x, centre - half, centre + half)
        wide = np.clip(x, centre - _WIDE * half, centre + _WIDE * half)
        out[k] = [np.full(x.shape[:-1], float(x.shape[-1])), narrow.sum(-1),
                  (narrow * narrow).sum(-1), wide.sum(-1), (wide * wide).sum(-1)]
    return out


def sample_var(n: Any, total: Any, total_sq: Any) -> Any:
    n = np.maximum(n, 2.0)
    return np.maximum((total_sq - total * total / n) / (n - 1.0), 0.0)


def evidence(cfg: TestConfig, sums: np.ndarray) -> tuple[Any, Any]:
    """(mean difference, information) from ``part_sums``-shaped sums.

    Scores and informations add over independent pieces, so rows scored twice (paired) and
    sums-only increments (unpaired) combine by inverse-variance weighting.
    """
    floor = _VAR_FLOOR * cfg.min_drop ** 2
    n, mean, var = [], [], []
    for s in sums:
        n.append(np.maximum(s[0], 1.0))
        mean.append(s[1] / n[-1])
        var.append(np.maximum(np.maximum(sample_var(*s[:3]), sample_var(s[0], s[3], s[4])), floor) / n[-1])
    ok_d, ok_u = sums[0, 0] >= 2, (sums[1, 0] >= 2) & (sums[2, 0] >= 2)
    info_d, info_u = np.where(ok_d, 1 / var[0], 0.0), np.where(ok_u, 1 / (var[1] + var[2]), 0.0)
    info = info_d + info_u
    score = info_d * mean[0] + info_u * (mean[1] - mean[2])
    return np.where(info > 0, score / np.where(info > 0, info, 1.0), np.nan), info


def logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).sum(axis=-1))


def log_e(cfg: TestConfig, score: Any, info: Any) -> tuple[Any, Any]:
    """Log mixture likelihood ratios against "not worse" and against "worse by min_drop"."""
    theta = cfg.min_drop * _RATIOS
    s, i = np.asarray(score, dtype=float)[..., None], np.asarray(info, dtype=float)[..., None]
    s = np.where(np.isfinite(s), s, 0.0)
    quad = theta * theta * i / 2
    log_drop = logsumexp(_LOG_W - theta * s - quad)
    log_safe = logsumexp(_LOG_W + theta * (s + cfg.min_drop * i) - quad)
    return log_drop, log_safe


def decide(cfg: TestConfig, log_drop: Any, log_safe: Any, n_c: Any, n_p: Any) -> np.ndarray:
    """Rollback beats not_worse when both cross (safety first); nothing before min_rows."""
    ready = (np.asarray(n_c) >= cfg.min_rows) & (np.asarray(n_p) >= cfg.min_rows)
    drop = ready & (log_drop >= math.log(1 / cfg.alpha))
    safe = ready & (log_safe >= math.log(1 / cfg.beta))
    return np.where(drop, 1, np.where(safe, 2, 0))


def half_width(cfg: TestConfig, info: float) -> float:
    """Half-width of the two-sided (alpha/2 per side) confidence sequence from the mixture."""
    if info <= 0:
        return math.inf
    theta, level = cfg.min_drop * _RATIOS, math.log(2 / cfg.alpha)
    f = lambda x: logsumexp(_LOG_W + theta * x * info - theta * theta * info / 2) - level
    lo, hi = 0.0, float(np.min((level - _LOG_W) / (theta * info) + theta / 2))
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return hi


def ref_levels(cfg: TestConfig, ref_c: np.ndarray, ref_p: np.ndarray) -> tuple[Any, Any]:
    """Clip centre and half-width from the reference rows (along the last axis).

    Unpaired: median +- clip * robust sd of the pooled log-likelihoods (both arms alike, so A/A
    stays exchangeable). Paired: around the median difference, but never narrower than clip *
    the robust sd of the log-likelihoods themselves: when the models agree on most rows the
    differences' own scale is tiny, and clipping at it would hide a canary that fails badly
    on a few percent of rows; a glitch row is one absurd on the log-likelihood scale.
    """
    def scale(x: np.ndarray) -> Any:  # MAD-based sd; mean-deviation-based when most rows tie
        dev = np.abs(x - np.median(x, axis=-1, keepdims=True))
        mad = _MAD_SD * np.median(dev, axis=-1)
        return np.where(mad > 0, mad, _MEAN_AD_SD * dev.mean(axis=-1))

    pooled = np.concatenate([ref_c, ref_p], axis=-1)
    x = ref_c - ref_p if cfg.mode == "paired" else pooled
    sd = scale(pooled) if cfg.mode == "unpaired" else np.maximum(scale(x), scale(pooled))
    return np.median(x, axis=-1), np.where(sd > 0, cfg.clip * sd, np.inf)


def ref_take(have: int, n_c: int, n_p: int) -> tuple[int, int]:
    """How many of a batch's rows (per arm) still go into the reference block."""
    room = max(REF_ROWS - have, 0)
    if n_c + n_p <= room:
        return n_c, n_p
    take_c = room * n_c // (n_c + n_p)
    return take_c, room - take_c


__all__ = ["REF_ROWS", "decide", "evidence", "half_width", "log_e", "part_sums", "ref_levels",
           "ref_take", "sample_var"]
