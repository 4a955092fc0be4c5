"""The registration gate for a fleet: one paired test per key, false discoveries controlled.

A fleet refit yields a candidate for every key. Gating each key with ``decide`` would call
roughly one equally good key in five "worse" (its 80% upper bound) and, over thousands of
keys, keep or reject keys by noise. Here every key gets the paired comparison of today's
gate (d_j = candidate - champion per held-out row, tolerance margin), turned into evidence
that the candidate is WORSE than the champion by more than the tolerance, and the keys found
worse are chosen with false-discovery control across keys (:mod:`mleops.multiplicity`):

* ``method="e-bh"``: per-key e-values, e-BH; FDR <= q under any dependence between keys.
* ``method="bh"``: per-key one-sided t-test p-values, BH; FDR <= q for independent (or
  PRDS) keys. Keys are fitted on disjoint rows, so independence across keys is the usual
  case; e-BH is there for when it is not (shared features, one bad deploy for many keys).

The per-key e-value is a one-sided normal mixture on the studentised mean. With
T = -(mean(d) + tolerance) / se (large when the candidate is worse), Z = Phi^-1(F_t(T; B-1))
and rho = n * effect_scale^2,

    e = 2 / sqrt(1 + rho) * exp(rho Z^2 / (2 (1 + rho))) * Phi(Z sqrt(rho / (1 + rho))),

the average of exp(lam Z - lam^2 / 2) over lam >= 0 half-normal(rho). Each such bet has
E <= 1 whenever Z ~ N(theta, 1) with theta <= 0, i.e. under the null "not worse than the
tolerance" (mean(d) >= -tolerance), so E[e] <= 1 too. Conditions: exact for Gaussian rows
independent within a key (T is then Student t), asymptotically valid (CLT) for other
finite-variance rows. Rows correlated within a key (ordered in time) break the iid standard
error; ``batch > 1`` uses contiguous batch means (clustered standard error, B batches).

Merge rule (the issue's): keys where the candidate is not found worse take the candidate's
parameters, keys found worse keep the champion's, new keys enter if their calibration passes.
Precisely, per key ``take`` is

* existing key (champion rows present): ``"champion"`` if found worse, if its calibration
  fails (a key absent from ``calib`` fails, with that reason), if it has fewer than
  ``min_rows`` held-out rows (too few to show anything: keep what is there), or if
  ``on_inconclusive="reject"`` and its per-key bounds are not ``not_worse``; else
  ``"candidate"``;
* new key (champion_ll NaN on all its rows, or no champion at all): ``"candidate"`` iff its
  calibration passes, else ``"excluded"`` (the key gets no model from this fleet).

Untested keys (new, too few rows) are not hypotheses: they do not count in K. The per-key
``likelihood_outcome`` (today's 95% lower / 80% upper z bounds) is reported for reading; it
is the FDR-controlled ``worse`` column that keeps a champion. ``passed`` = at least one key
takes the candidate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from mleops.gate.decision import GateConfig, _calibration_check
from mleops.multiplicity import bh, e_bh

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("e-bh", "bh")
LOG_E_MAX = 700.0  # e-values are capped at exp(700) (float64 overflows at exp(709.8))


@dataclass
class FleetGateConfig:
    gate: GateConfig = field(default_factory=GateConfig)  # per-key test: tolerance, bounds
    fdr: float = 0.05  # target false discovery rate of "worse" calls across keys
    method: str = "e-bh"  # "e-bh" (any dependence) or "bh" (independent / PRDS keys)
    min_rows: int = 30  # keys with fewer held-out rows are not tested
    batch: int = 1  # contiguous rows per batch for the standard error (1 = iid rows)
    effect_scale: float = 0.1  # prior scale of the standardised effect in the e-value mixture

    def __post_init__(self):
        if not isinstance(self.gate, GateConfig):
            raise ValueError(f"FleetGateConfig.gate must be a GateConfig, got {self.gate!r}")
        if self.gate.test != "z":
            raise ValueError("FleetGateConfig.gate.test must be 'z': the fleet gate's per-key "
                             f"bounds are the vectorised z bounds, got {self.gate.test!r}")
        for name in ("fdr", "effect_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v <= 0 or (name == "fdr" and v >= 1):
                raise ValueError(f"FleetGateConfig.{name} must lie in "
                                 f"{'(0, 1)' if name == 'fdr' else '(0, inf)'}, got {v!r}")
            setattr(self, name, float(v))
        if self.method not in METHODS:
            raise ValueError(f"FleetGateConfig.method must be one of {METHODS}, "
                             f"got {self.method!r}")
        for name, lo in (("min_rows", 2), ("batch", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"FleetGateConfig.{name} must be an integer >= {lo}, "
                                 f"got {v!r}")
            setattr(self, name, int(v))


def _plain(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass
class FleetDecision:
    """Per-key table (indexed by key) plus the fleet's summary; ``to_dict`` is JSON-safe."""

    passed: bool  # at least one key takes the candidate
    table: pd.DataFrame
    discoveries: list  # keys found worse (FDR-controlled)
    fdr: float
    method: str
    counts: dict
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        rows = [{"key": _plain(k), **{c: _plain(v) for c, v in r.items()}}
                for k, r in zip(self.table.index, self.table.to_dict("records"))]
        return {"passed": bool(self.passed), "fdr": self.fdr, "method": self.method,
                "counts": {k: int(v) for k, v in self.counts.items()},
                "discoveries": [_plain(k) for k in self.discoveries],
                "config": self.config, "keys": rows}


def _rows(a, what: str, allow_nan: bool) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: cannot be read as numbers ({e})") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D array of per-row log-likelihoods, "
                         f"got shape {arr.shape}")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: {int(bad.sum())} {'infinite' if allow_nan else 'non-finite'}"
                         f" per-row log-likelihood(s); first at row {i}: {arr[i].item()!r}")
    return arr


def _group(keys, n: int):
    """Sorted unique keys, a stable row order grouping them, group starts and sizes."""
    k = np.asarray(keys)
    if k.ndim != 1 or k.size == 0:
        raise ValueError(f"keys: expected a non-empty 1-D array of row keys, got shape {k.shape}")
    if k.size != n:
        raise ValueError(f"keys has {k.size} rows but candidate_ll has {n}: one key per "
                         "held-out row")
    try:
        uniq, inv = np.unique(k, return_inverse=True)
    except TypeError as e:
        raise ValueError(f"keys: cannot be sorted ({e}); use one type (e.g. strings)") from None
    inv = inv.ravel()
    order = None if (np.diff(inv) >= 0).all() else np.argsort(inv, kind="stable")
    counts = np.bincount(inv, minlength=uniq.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return uniq, order, starts, counts


def _key_stats(d: np.ndarray, starts, counts, batch: int):
    """Per key: rows, mean, sd and the (batch-means) standard error of the mean, batches."""
    n = counts.astype(np.float64)
    s1 = np.add.reduceat(d, starts)
    mean = s1 / n
    dev = d - np.repeat(mean, counts)
    ss = np.add.reduceat(dev * dev, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(ss / (n - 1))
    if batch == 1:
        nb = counts.copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            se = sd / np.sqrt(n)
        return mean, sd, se, nb
    pos = np.arange(d.size) - np.repeat(starts, counts)
    new = pos % batch == 0  # a batch starts at each key's first row and every batch rows
    gid = np.cumsum(new) - 1
    bsum = np.bincount(gid, weights=dev)  # sums of deviations from the key mean per batch
    bkey = np.repeat(np.arange(counts.size), counts)[new]
    nb = np.bincount(bkey, minlength=counts.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.bincount(bkey, weights=bsum * bsum, minlength=counts.size) / (n * n)
        se = np.sqrt(var * nb / (nb - 1))
    return mean, sd, se, nb


def skewness(d: np.ndarray, starts, counts) -> np.ndarray:
    """Per key: the sample skewness g1 of its rows (0 for a constant key)."""
    n = counts.astype(np.float64)
    mean = np.add.reduceat(d, starts) / n
    dev = d - np.repeat(mean, counts)
    m2 = np.add.reduceat(dev * dev, starts) / n
    m3 = np.add.reduceat(dev * dev * dev, starts) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(m3 / m2 ** 1.5, nan=0.0, posinf=0.0, neginf=0.0)


def hall(t: np.ndarray, g1: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Hall's (1992) transformation of T = -sqrt(n) (mean - mu) / s removing the skewness
    term of its Edgeworth expansion: monotone in T, nearer N(0, 1) (error O(1/n), not
    O(1/sqrt(n))). Skewed rows otherwise put too much of T's upper tail (false "worse")."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = t - g1 * (1 + 2 * t * t) / (6 * np.sqrt(n)) + g1 * g1 * t ** 3 / (27 * n)
    return np.where(np.isfinite(t), out, t)


def _evidence(mean, se, nb, n, tol: float, effect_scale: float, g1=None):
    """Per key: T (large = worse; skew-corrected with ``g1``), the one-sided t p-value and
    the normal-mixture e-value."""
    gap = mean + tol
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, -gap / se, np.where(gap < 0, np.inf, np.where(gap > 0, -np.inf, 0)))
    if g1 is not None:
        t = hall(t, g1, n)
    df = np.maximum(nb - 1, 1).astype(np.float64)
    p = stats.t.sf(t, df)
    # Z with the same tail probability as T under Student t(B-1): exact for Gaussian rows
    z = np.where(t > 0, stats.norm.isf(p), stats.norm.ppf(stats.t.cdf(t, df)))
    z = np.clip(z, -37.0, 37.0)
    rho = n * effect_scale ** 2
    log_e = (math.log(2.0) - 0.5 * np.log1p(rho) + rho * z * z / (2.0 * (1.0 + rho))
             + stats.norm.logcdf(z * np.sqrt(rho / (1.0 + rho))))
    return t, p, np.exp(np.minimum(log_e, LOG_E_MAX))


def decide_fleet(candidate_ll, champion_ll, keys, calib: dict,
                 config: FleetGateConfig | None = None) -> FleetDecision:
    """Gate a fleet's candidates key by key, with the "worse" calls FDR-controlled.

    ``candidate_ll``/``champion_ll``: per-row held-out log-likelihoods on the same rows
    (``champion_ll`` NaN on every row of a key the champion lacks; ``None`` without any
    champion); ``keys``: each row's key; ``calib``: key -> the candidate's calibration dict.
    Raises ``ValueError`` on mismatched, empty or non-finite input.
    """
    cfg = config if config is not None else FleetGateConfig()
    g = cfg.gate
    if not isinstance(calib, dict):
        raise ValueError(f"calib must be a dict key -> calibration dict, got {type(calib)}")
    cand = _rows(candidate_ll, "candidate_ll", allow_nan=False)
    uniq, order, starts, counts = _group(keys, cand.size)
    if champion_ll is None:
        champ = np.full(cand.size, np.nan)
    else:
        champ = _rows(champion_ll, "champion_ll", allow_nan=True)
        if champ.shape != cand.shape:
            raise ValueError(f"candidate_ll and champion_ll must score the same held-out rows: "
                             f"shapes {cand.shape} and {champ.shape} differ")
    if order is not None:
        cand, champ = cand[order], champ[order]
    nan_rows = np.add.reduceat(np.isnan(champ).astype(np.int64), starts)
    mixed = (nan_rows > 0) & (nan_rows < counts)
    if mixed.any():
        k = uniq[int(np.flatnonzero(mixed)[0])]
        raise ValueError(f"champion_ll is NaN on some but not all rows of {int(mixed.sum())} "
                         f"key(s), first {_plain(k)!r}: NaN must mark a whole key the champion "
                         "does not have")
    has_champ = nan_rows == 0
    d = cand - np.where(np.isnan(champ), 0.0, champ)
    mean, sd, se, nb = _key_stats(d, starts, counts, cfg.batch)
    tested = has_champ & (counts >= cfg.min_rows) & (nb >= 2)
    g1 = skewness(d, starts, counts) if cfg.batch == 1 else None  # iid rows: Hall's T
    t, p, e = _evidence(mean, se, nb, counts.astype(np.float64), g.tolerance, cfg.effect_scale,
                        g1)
    nan = np.full(uniq.size, np.nan)
    for a in (t, p, e):
        a[~tested] = np.nan
    mean, sd, se = (np.where(has_champ, a, nan) for a in (mean, sd, se))
    worse = e_bh(e, cfg.fdr) if cfg.method == "e-bh" else bh(p, cfg.fdr)
    lb = mean - float(stats.norm.ppf(g.confidence)) * se
    ub = mean + float(stats.norm.ppf(g.worse_confidence)) * se
    outcome = np.where(lb >= -g.tolerance, "not_worse",
                       np.where(ub < -g.tolerance, "worse", "inconclusive")).astype(object)
    outcome[~tested] = "too_few_rows"
    outcome[~has_champ] = "new_key"

    cal_ok, take, reason = [], [], []
    for i, k in enumerate(uniq.tolist()):
        c = calib.get(k)
        if c is None:
            ok, why = False, "calibration FAILS: no calibration dict for this key"
        elif not isinstance(c, dict):
            raise ValueError(f"calib[{k!r}] must be a calibration dict, got {type(c)}")
        else:
            try:
                ok, reasons, _ = _calibration_check(c, g)
            except ValueError as err:
                raise ValueError(f"calib[{k!r}]: {err}") from None
            why = "; ".join(r for r in reasons if "FAILS" in r) or "calibration passes"
        cal_ok.append(bool(ok))
        if not has_champ[i]:
            tk = "candidate" if ok else "excluded"
            why = f"new key: {why}: " + ("enters" if ok else "excluded (no model for this key)")
        elif not tested[i]:
            tk, why = "champion", (f"too few rows ({int(counts[i])} < min_rows "
                                   f"{cfg.min_rows}): keeps the champion")
        elif worse[i]:
            tk, why = "champion", (f"found worse ({cfg.method} at FDR {cfg.fdr:g}; mean diff "
                                   f"{mean[i]:+.4g} vs -tolerance {-g.tolerance:+.4g}): keeps "
                                   "the champion")
        elif not ok:
            tk, why = "champion", f"{why}: keeps the champion"
        elif g.on_inconclusive == "reject" and outcome[i] != "not_worse":
            tk, why = "champion", f"{outcome[i]} and on_inconclusive=reject: keeps the champion"
        else:
            tk, why = "candidate", f"not found worse ({outcome[i]}), calibrated: takes the candidate"
        take.append(tk)
        reason.append(why)

    import pandas as pd  # only where a table is built: the gate task imports this module

    table = pd.DataFrame({
        "n": counts, "has_champion": has_champ, "mean_diff": mean, "sd_diff": sd, "se": se,
        "t": t, "p_value": p, "e_value": e, "lower_bound": lb, "upper_bound": ub,
        "likelihood_outcome": outcome, "worse": worse, "calibration_passed": cal_ok,
        "take": take, "reason": reason}, index=pd.Index(uniq, name="key"))
    tk = table["take"].to_numpy()
    counts_out = {"keys": int(uniq.size), "tested": int(tested.sum()),
                  "new_keys": int((~has_champ).sum()),
                  "too_few_rows": int((has_champ & ~tested).sum()),
                  "discoveries": int(worse.sum()),
                  "take_candidate": int((tk == "candidate").sum()),
                  "take_champion": int((tk == "champion").sum()),
                  "excluded": int((tk == "excluded").sum())}
    conf = {**{k: v for k, v in asdict(cfg).items() if k != "gate"}, "gate": asdict(g)}
    return FleetDecision(passed=counts_out["take_candidate"] > 0, table=table,
                         discoveries=[_plain(k) for k in uniq[worse]], fdr=cfg.fdr,
                         method=cfg.method, counts=counts_out, config=conf)


__all__ = ["FleetDecision", "FleetGateConfig", "decide_fleet"]
