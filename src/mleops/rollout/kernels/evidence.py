"""The evidence kernels of the rollout test: block contrasts, their variance, mixture e-values.

Every look of :class:`~mleops.rollout.kernels.statistics.SequentialTest` goes through these functions,
whatever fed it (the controller's ticks, :func:`mleops.rollout.evaluate_stream`, a benchmark).

A *block* is what one tick saw. Its contrast ``c_b`` is canary minus champion within the block
(paired: the mean per-request difference of the same rows; split: the difference of the two
arms' request means), so anything both arms share within a block (the traffic mix drifting over
the day, a slow backend) cancels. Blocks combine with weights ``w_b`` (requests, or the
harmonic count ``1/(1/m_c + 1/m_p)`` in split mode) into ``theta = sum w c / W``.

Its variance comes from the requests' long-run variance, so serially correlated requests
count for less than independent ones: paired differences around their overall mean (they cross
blocks), prewhitened by an AR(1) fit and then Bartlett-weighted (``paired_long_run``); each
split arm around its block's means, Newey-West over up to ``LAGS`` neighbours (so a drift
cannot pass for variance). A floor ties it to the data's scale: the per-request sd of a
contrast is at least ``scale_floor`` times the log-likelihoods' own sd (and at least
``min_drop``), so a short run in which the rare rows have not shown up yet cannot look
precise. The cluster-robust between-block variance is reported alongside.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from mleops.fit.inference import LAGS, newey_west

if TYPE_CHECKING:  # typing only: statistics builds on these kernels
    from mleops.rollout.kernels.config import TestConfig

_RATIOS = np.array([0.8, 1.6, 3.2, 6.4, 0.4, 0.2, 0.1])  # drifts, in units of min_drop
_LOG_W = np.log(np.array([0.9, 0.03, 0.02, 0.01, 0.02, 0.01, 0.01]))  # most at the design drift
_RHO_MAX = 0.9  # prewhitening AR(1) coefficient bound (a near-unit root would explode 1/(1-rho))
#: accumulator layout (one float vector, so a state round-trips through JSON exactly)
FIELDS = ("blocks", "W", "S1", "S2", "S3", "S4", "A_c", "A_p", "ss_d", "df_d", "ss_c", "df_c",
          "ss_p", "df_p", "ss_llc", "df_llc", "ss_llp", "df_llp", "rows_c", "rows_p",
          "units_c", "units_p", "nw_c", "den_c", "nw_p", "den_p", "sum_d", "sumsq_d",
          *(f"lag{k}_d" for k in range(1, LAGS + 1)), "sum_blocks")
IDX = {f: i for i, f in enumerate(FIELDS)}


Stats = tuple[int, float, float, float, float]  # units, mean, ss, Newey-West sum, its divisor


def arm_stats(units: np.ndarray) -> Stats:
    """One series of per-request values in arrival order: (units, mean, squared deviations
    from the block mean, their Newey-West sum and its divisor: see ``newey_west``)."""
    u = np.asarray(units, dtype=float)
    if not u.size:
        return 0, math.nan, 0.0, 0.0, 0.0
    ss, _, nw, den = newey_west(u, LAGS)
    return int(u.size), float(u.mean()), ss, nw, den


def sums_stats(n: float, total: float, total_sq: float) -> Stats:
    """The same from (rows, sum, sum of squares) alone: no order, so no lag products (the
    block is the unit: see ``estimate``)."""
    n_i = int(round(n))
    ss = max(total_sq - total * total / n, 0.0)
    return n_i, total / n, ss, ss, float(max(n_i - 1, 0))


def paired_lags(d: np.ndarray, tail: list[float]) -> np.ndarray:
    """Lag-1..LAGS products of the paired differences, continuing across blocks (``tail``:
    the previous requests' differences, oldest first)."""
    x = np.concatenate([np.asarray(tail, float), np.asarray(d, float)])
    start = len(tail)
    out = np.zeros(LAGS)
    for k in range(1, LAGS + 1):
        lo = max(start, k)
        if lo < x.size:
            out[k - 1] = float(x[lo:] @ x[lo - k:x.size - k])
    return out


def paired_long_run(acc: np.ndarray, head: list[float], tail: list[float]
                    ) -> tuple[float, float]:
    """Long-run variance of the paired differences around their overall mean, prewhitened
    (Andrews & Monahan 1992): an AR(1) fit takes out the bulk of the serial correlation, a
    Bartlett kernel with Andrews' (1991) AR(1) plug-in bandwidth takes what is left, and
    ``1/(1 - rho)^2`` recolours it. A fixed 10-lag Bartlett kernel alone under-states an AR(1)
    long-run variance by 7-12% and rolled back 1.5% of AR(1) A/A streams; this one, 0.8%.
    Autocovariances are exact, from uncentered sums (the first and last ``LAGS`` values
    correct the ends). Returns (long-run variance, plain variance)."""
    n, s, q = acc[IDX["W"]], acc[IDX["sum_d"]], acc[IDX["sumsq_d"]]
    if n < 2:
        return 0.0, 0.0
    theta = s / n
    c = [max(q - n * theta * theta, 0.0)]  # n x autocovariances at lags 0..top
    c += [acc[IDX[f"lag{k}_d"]] - theta * (s - sum(head[:k])) - theta * (s - sum(tail[-k:]))
          + (n - k) * theta * theta for k in range(1, min(LAGS, int(n) - 1) + 1)]
    plain = c[0] / (n - 1.0)
    if len(c) < 3 or c[0] <= 0:
        return plain, plain
    rho = min(max(c[1] / c[0], -_RHO_MAX), _RHO_MAX)
    # autocovariances of the AR(1) residuals d_t - rho d_(t-1), lags 0..top-1
    e = [(1 + rho * rho) * c[0] - 2 * rho * c[1]]
    e += [(1 + rho * rho) * c[k] - rho * (c[k - 1] + c[k + 1]) for k in range(1, len(c) - 1)]
    lags = _bandwidth(e[1] / e[0] if e[0] > 0 else 0.0, n, len(e) - 1)
    nw, den = e[0], n - 1.0
    for k in range(1, lags + 1):
        w = 1.0 - k / (lags + 1)
        nw += 2.0 * w * e[k]
        den -= 2.0 * w * (n - k) / n
    long_run = nw / den / (1.0 - rho) ** 2 if den > 0 else 0.0
    # never below the variance of independent requests: the lags only ever add (their noise
    # must not pass for precision: an A/A stream would roll back more often)
    return max(long_run, plain), plain


def _bandwidth(rho: float, n: float, most: int) -> int:
    """Andrews' (1991) Bartlett bandwidth for an AR(1) with coefficient ``rho``: about 2 for
    white residuals (little noise), more where correlation is left, at most ``most``."""
    rho = min(max(rho, -_RHO_MAX), _RHO_MAX)
    a = 4 * rho * rho / ((1 - rho) ** 2 * (1 + rho) ** 2)
    return max(1, min(most, int(1.1447 * (a * n) ** (1 / 3))))


def block_terms(paired: bool, c: Stats, p: Stats, rows_c: int, rows_p: int,
                ll_c: Stats | None = None, ll_p: Stats | None = None) -> np.ndarray:
    """One block's contribution to the accumulator (``FIELDS`` order), from ``arm_stats``.

    Paired: ``c`` holds the per-request differences (``p`` is unused) and ``ll_c`` / ``ll_p``
    each arm's per-request log-likelihoods (the scale). Split: each arm's request means.
    """
    acc = np.zeros(len(FIELDS))
    put = lambda f, v: acc.__setitem__(IDX[f], v)  # noqa: E731
    df = lambda s: max(s[0] - 1, 0)  # noqa: E731
    def lags(name: str, st: Stats) -> None:
        put(f"nw_{name}", st[3]), put(f"den_{name}", st[4])

    if paired:  # lag products of the differences: paired_lags (they cross blocks)
        m, mean, ss, _, _ = c
        contrast, w = mean, float(m)
        put("A_c", w), put("ss_d", ss), put("df_d", df(c))
        put("sum_d", m * mean), put("sumsq_d", ss + m * mean * mean)
        put("units_c", m), put("units_p", m)
    else:
        contrast, w = c[1] - p[1], 1.0 / (1.0 / c[0] + 1.0 / p[0])
        put("A_c", w * w / c[0]), put("A_p", w * w / p[0])
        put("ss_c", c[2]), put("df_c", df(c)), put("ss_p", p[2]), put("df_p", df(p))
        lags("c", c), lags("p", p)
        put("units_c", c[0]), put("units_p", p[0])
        ll_c, ll_p = c, p
    put("blocks", 1.0), put("W", w), put("S1", w * contrast)
    put("S2", w * w * contrast * contrast), put("S3", w * w * contrast), put("S4", w * w)
    for name, s in (("llc", ll_c), ("llp", ll_p)):
        if s is not None:
            put(f"ss_{name}", s[2]), put(f"df_{name}", df(s))
    put("rows_c", rows_c), put("rows_p", rows_p)
    return acc


def _pooled(acc: np.ndarray, ss: str, df: str) -> float:
    return acc[IDX[ss]] / acc[IDX[df]] if acc[IDX[df]] > 0 else 0.0


def _long_run(acc: np.ndarray, name: str) -> tuple[float, float]:
    """Newey-West (Bartlett) long-run variance of one series: its variance plus the weighted
    autocovariances of neighbouring requests, so serially correlated rows count for less."""
    den = acc[IDX[f"den_{name}"]]
    nw = max(acc[IDX[f"nw_{name}"]], 0.0) / den if den > 0 else 0.0
    plain = _pooled(acc, f"ss_{name}", f"df_{name}")
    return max(nw, plain), plain  # the lags only ever add


def estimate(cfg: TestConfig, acc: np.ndarray, head: list[float] | None = None,
             tail: list[float] | None = None) -> tuple[float, float, dict[str, float]]:
    """(mean contrast, its variance, the estimates behind it) from the accumulator (paired:
    with the first and last differences, see ``paired_long_run``)."""
    a = lambda f: acc[IDX[f]]  # noqa: E731
    W, B = a("W"), a("blocks")
    if W <= 0:
        return math.nan, math.inf, {}
    theta = a("S1") / W
    between = (max(a("S2") - 2 * theta * a("S3") + theta * theta * a("S4"), 0.0) / (W * W)
               * (B / (B - 1)) if B >= 2 else math.inf)
    if cfg.mode == "paired":
        lr, plain = paired_long_run(acc, head or [], tail or [])
        long_run, ratios = lr / W, [plain / lr if lr > 0 else 1.0]
        spread = a("A_c") / (W * W)  # = 1/W: per-request variance -> variance of theta
    else:
        (lr_c, pl_c), (lr_p, pl_p) = _long_run(acc, "c"), _long_run(acc, "p")
        long_run = (lr_c * a("A_c") + lr_p * a("A_p")) / (W * W)
        ratios = [pl / lr if lr > 0 else 1.0 for lr, pl in ((lr_c, pl_c), (lr_p, pl_p))]
        spread = (a("A_c") + a("A_p")) / (W * W)
        if a("sum_blocks") > 0 and math.isfinite(between) and between > long_run:
            # sums carry no request ids and no order: rows of one request, or serially
            # correlated rows, look independent. The block (tick) is the unit then: the
            # between-block variance of the contrasts sees any correlation within a block.
            ratios.append(long_run / between if between > 0 else 1.0)
            long_run = between
    sd_ll = math.sqrt(max(_pooled(acc, "ss_llc", "df_llc"), _pooled(acc, "ss_llp", "df_llp")))
    floor = max(cfg.min_drop, cfg.scale_floor * sd_ll) ** 2 * spread
    # correlated requests carry less information: the burn-in counts effective requests
    return theta, max(long_run, floor), {"long_run": long_run, "floor": floor,
                                         "between_blocks": between,
                                         "effective_share": min(ratios)}


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).sum(axis=-1))


def log_e(cfg: TestConfig, score: Any, info: Any) -> tuple[Any, Any]:
    """Log mixture likelihood ratios against "not worse" and against "worse by min_drop"."""
    theta = cfg.min_drop * _RATIOS
    s, i = np.asarray(score, dtype=float)[..., None], np.asarray(info, dtype=float)[..., None]
    s = np.where(np.isfinite(s), s, 0.0)
    quad = theta * theta * i / 2
    log_drop = _logsumexp(_LOG_W - theta * s - quad)
    log_safe = _logsumexp(_LOG_W + theta * (s + cfg.min_drop * i) - quad)
    return log_drop, log_safe


def decide(cfg: TestConfig, log_drop: float, log_safe: float, ready: bool) -> int:
    """0 continue, 1 rollback, 2 not_worse: rollback beats not_worse when both cross (safety
    first); nothing before the burn-in (``ready``)."""
    if not ready:
        return 0
    if log_drop >= math.log(1 / cfg.alpha):
        return 1
    return 2 if log_safe >= math.log(1 / cfg.beta) else 0


def half_width(cfg: TestConfig, info: float) -> float:
    """Half-width of the two-sided (alpha/2 per side) confidence sequence from the mixture:
    the x where the mixture of ``exp(d x I - d^2 I / 2)`` reaches ``2/alpha`` (one vectorised
    evaluation on a grid, then linear interpolation: it is shown, not decided on)."""
    if not info > 0 or not math.isfinite(info):
        return math.inf
    theta, level = cfg.min_drop * _RATIOS, math.log(2 / cfg.alpha)
    hi = float(np.min((level - _LOG_W) / (theta * info) + theta / 2))  # one term alone
    x = np.linspace(0.0, hi, 257)
    f = _logsumexp(_LOG_W + np.outer(x, theta) * info - theta * theta * info / 2) - level
    k = int(np.searchsorted(f, 0.0))  # f increases in x (each term does, for x > d/2)
    if k == 0:
        return 0.0
    if k >= x.size:
        return hi
    return float(x[k - 1] + (x[k] - x[k - 1]) * (-f[k - 1]) / (f[k] - f[k - 1]))


__all__ = ["FIELDS", "IDX", "LAGS", "arm_stats", "block_terms", "paired_lags", "paired_long_run",
           "sums_stats", "decide", "estimate", "half_width", "log_e"]
