"""Every look of a :class:`~mleops.rollout.statistics.SequentialTest` on many streams at once.

What a power benchmark needs: thousands of simulated rollouts, each looked at every few rows,
without the per-batch Python loop. It adds the same clipped sums in the same order and reuses
the same evidence code as the controller's test; the tests check it against the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mleops.errors import DataError
from mleops.rollout.evidence import (
    REF_ROWS,
    decide,
    evidence,
    log_e,
    part_sums,
    ref_levels,
    ref_take,
)
from mleops.rollout.statistics import TestConfig


@dataclass(frozen=True)
class Trace:
    """Many streams at every look (what a benchmark needs); arrays are (streams, looks)."""

    rows_canary: np.ndarray  # (looks,)
    rows_champion: np.ndarray  # (looks,)
    mean_diff: np.ndarray
    log_e_drop: np.ndarray
    log_e_safe: np.ndarray
    decision: np.ndarray  # int8 index into DECISIONS


def trace(config: TestConfig, canary: np.ndarray, champion: np.ndarray, look_canary: int,
          look_champion: int | None = None) -> Trace:
    """Every look of ``SequentialTest`` on many streams at once, without the Python loop.

    Row ``s`` of ``canary``/``champion`` is one stream; look ``j`` is what ``verdict()`` says
    after ``update_rows`` got batches ``j*look`` to ``(j+1)*look`` of each arm (paired mode:
    the same rows). Same clipping rule, same sums added in the same order, same evidence
    code; the tests check it against the loop.
    """
    cfg, paired = config, config.mode == "paired"
    c, p = np.asarray(canary, dtype=float), np.asarray(champion, dtype=float)
    if not (np.isfinite(c).all() and np.isfinite(p).all()):
        raise DataError("trace needs finite log-likelihoods")
    kc = int(look_canary)
    kp = kc if paired else int(look_champion or kc)
    looks = min(c.shape[1] // kc, p.shape[1] // kp)
    reps, start = c.shape[0], 0  # start: the first look the vectorised tail handles
    sums = np.zeros((3, 5, reps, looks))
    post, centre, half = np.zeros((3, 5, reps)), np.zeros(reps), np.full(reps, np.inf)
    while cfg.clip > 0 and start < looks:  # reference block: batches before it fills, whole
        tc, tp = ref_take(start * (kc + kp * (not paired)), kc, kp * (not paired))
        tp = tc if paired else tp
        ref_c, ref_p = c[:, :start * kc + tc], p[:, :start * kp + tp]
        centre, half = ref_levels(cfg, ref_c, ref_p)
        post = part_sums(cfg, ref_c, ref_p, centre, half)
        full = ref_c.shape[1] + ref_p.shape[1] * (not paired) >= REF_ROWS
        if full:  # frozen: the rest of this batch is clipped and added
            post = post + part_sums(cfg, c[:, start * kc + tc:(start + 1) * kc],
                                     p[:, start * kp + tp:(start + 1) * kp], centre, half)
        sums[..., start] = post
        start += 1
        if full:
            break
    if start < looks:
        tail = [x[:, start * k:looks * k].reshape(reps, looks - start, k)
                for x, k in ((c, kc), (p, kp))]
        batches = part_sums(cfg, *tail, centre[:, None], half[:, None])
        sums[..., start:] = np.cumsum(np.concatenate([post[..., None], batches], axis=-1),
                                      axis=-1)[..., 1:]
    mean, info = evidence(cfg, sums)
    log_drop, log_safe = log_e(cfg, mean * info, info)
    n_c = kc * np.arange(1, looks + 1)
    n_p = kc * np.arange(1, looks + 1) if paired else kp * np.arange(1, looks + 1)
    decision = decide(cfg, log_drop, log_safe, n_c, n_p).astype(np.int8)
    return Trace(n_c, n_p, mean, log_drop, log_safe, decision)


__all__ = ["Trace", "trace"]
