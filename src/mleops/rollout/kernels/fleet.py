"""Per-key canary evidence for a fleet, and decisions with false-discovery control across keys.

One e-process per key, on the same mixture likelihood ratio as a single model's rollout
(:func:`mleops.rollout.kernels.evidence.log_e`): each tick is a block, the contrast is
canary minus champion *within* the block (a drift both arms share cancels: blocking), on
request means (rows of one request count once), in shadow mode on the paired per-row
differences (pairing). A block's contrast is weighted by its inverse variance, estimated
from the key's request means before that block (a predictable plug-in, never below
``scale_floor`` times the key's log-likelihood sd).

Across keys, at every tick, the keys to roll back are selected by e-BH at level ``fdr`` on
*stopped* e-values: a key decided earlier keeps the value it was decided with (its
e-process stopped there), an undecided key contributes its current value. A stopped
e-process is a valid e-value (optional stopping), and e-BH is valid for arbitrarily
dependent e-values, so the set of keys rolled back by the end is an e-BH rejection set of
valid e-values: FDR <= fdr. Running maxima are never used (e-BH does not cover them:
Tavyrikov, Goeman & de Heide 2025). The rejection sets only grow (a frozen value stays above
the threshold it crossed: more rejections only lower it). Keys are promoted by the same rule
on the mirror e-process ("not worse than min_drop"); a key crossing both is rolled back
(safety first). Keys that decide nothing before the end stay on the champion.

State is O(keys) numbers (counts, sums, the running contrast score and information, frozen
values): bounded, JSON-serialisable, resumable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mleops.errors import DataError
from mleops.multiplicity import e_bh
from mleops.rollout.kernels.config import TestConfig, finite
from mleops.rollout.kernels.evidence import log_e

UNDECIDED, ROLLBACK, PROMOTE = 0, 1, 2
NAMES = {UNDECIDED: "undecided", ROLLBACK: "rollback", PROMOTE: "promote"}
FIELDS = ("n_c", "s_c", "ss_c", "u_c", "n_p", "s_p", "ss_p", "u_p", "score", "info", "blocks",
          "decision", "tick", "log_drop", "log_safe")


@dataclass(frozen=True)
class FleetConfig:
    """A fleet rollout's promises: ``fdr`` across keys, ``min_drop`` per key, burn-in."""

    mode: str = "unpaired"  # "paired" (shadow) | "unpaired" (split traffic)
    min_drop: float = 0.05
    fdr: float = 0.05  # false discovery rate of rolled-back keys (and of promoted worse keys)
    min_rows: int = 100  # rows per arm of a key before it may decide
    min_units: int = 20  # requests per arm of a key before it may decide
    min_blocks: int = 3  # ticks with both arms before a key may decide
    scale_floor: float = 0.1

    def __post_init__(self) -> None:
        ok = [(self.mode in ("paired", "unpaired"), "mode must be paired or unpaired"),
              (finite(self.min_drop) and self.min_drop > 0, "min_drop must be > 0"),
              (finite(self.fdr) and 0 < self.fdr < 1, "fdr must be in (0, 1)"),
              (all(isinstance(v, int) and v >= 2 for v in (self.min_rows, self.min_units,
                                                           self.min_blocks)),
               "min_rows, min_units and min_blocks must be integers >= 2"),
              (finite(self.scale_floor) and self.scale_floor >= 0, "scale_floor must be >= 0")]
        for good, message in ok:
            if not good:
                raise DataError(f"bad fleet rollout config: {message}")

    @property
    def test(self) -> TestConfig:
        return TestConfig(mode=self.mode, min_drop=self.min_drop, alpha=self.fdr,
                          beta=self.fdr, scale_floor=self.scale_floor)


def e_bh_mask(log_e_values: np.ndarray, q: float) -> np.ndarray:
    """e-BH (:func:`mleops.gate.e_bh`) on log e-values (capped at exp(700): float64)."""
    return e_bh(np.exp(np.minimum(np.asarray(log_e_values, float), 700.0)), q)


class FleetEvidence:
    """The per-key e-processes of one fleet rollout over ``n_keys`` keys."""

    def __init__(self, n_keys: int, config: FleetConfig):
        self.config, self.k = config, int(n_keys)
        self.a = {f: np.zeros(self.k) for f in FIELDS}
        self.a["tick"][:] = -1
        self.ticks = 0

    # --- state ---------------------------------------------------------------------------
    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """JSON-ready (``arrays``: the per-key fields as numpy arrays, copied)."""
        return {"config": asdict(self.config), "ticks": self.ticks,
                **{f: self.a[f].copy() if arrays else self.a[f].tolist() for f in FIELDS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FleetEvidence:
        ev = cls(len(d["score"]), FleetConfig(**d["config"]))
        ev.ticks = int(d["ticks"])
        for f in FIELDS:
            ev.a[f] = np.asarray(d[f], dtype=float)
        return ev

    # --- one tick ------------------------------------------------------------------------
    def _arm(self, key: np.ndarray, unit: np.ndarray, value: np.ndarray):
        """Per key: request means' count, sum, sum of squares and rows in this block."""
        k = self.k
        rows = np.bincount(key, minlength=k).astype(float)
        if unit.size == 0:
            z = np.zeros(k)
            return z, z, z, rows
        # request means: one value per (key, request) unit
        uid, inv = np.unique(unit, return_inverse=True)
        m = np.bincount(inv, weights=value) / np.bincount(inv)
        ukey = np.zeros(uid.size, np.int64)
        ukey[inv] = key
        return (np.bincount(ukey, minlength=k).astype(float),
                np.bincount(ukey, weights=m, minlength=k),
                np.bincount(ukey, weights=m * m, minlength=k), rows)

    def tick(self, key: np.ndarray, request: np.ndarray, arm: np.ndarray,
             loglik: np.ndarray, loglik_champion: np.ndarray | None = None) -> np.ndarray:
        """Add one tick's rows (``key``: int codes 0..K-1; ``arm``: 1 canary, 0 champion);
        returns the keys decided at this tick (indices)."""
        key = np.asarray(key, np.int64)
        request = np.asarray(request, np.int64)
        canary = np.asarray(arm).astype(bool)
        ll = np.asarray(loglik, float)
        if self.config.mode == "paired":  # the same rows under both: their differences, one "arm"
            if loglik_champion is None:
                raise DataError("a paired (shadow) fleet rollout needs loglik_champion")
            d = ll - np.asarray(loglik_champion, float)
            c = self._arm(key, request * self.k + key, d)
            return self.update(c, (c[0], np.zeros(self.k), np.zeros(self.k), c[3]))
        return self.update(
            self._arm(key[canary], request[canary] * self.k + key[canary], ll[canary]),
            self._arm(key[~canary], request[~canary] * self.k + key[~canary], ll[~canary]))

    def update(self, canary: tuple, champion: tuple) -> np.ndarray:
        """One tick from per-key sufficient statistics of each arm: (requests, sum and sum
        of squares of request means, rows), arrays of K; in paired mode ``canary`` holds the
        paired differences' statistics. Returns the keys decided at this tick."""
        cfg, a = self.config, self.a
        self.ticks += 1
        n_c, s_c, ss_c, rows_c = (np.asarray(v, float) for v in canary)
        n_p, s_p, ss_p, rows_p = (np.asarray(v, float) for v in champion)
        if cfg.mode == "paired":
            block = n_c >= 1
            theta = np.where(block, s_c / np.maximum(n_c, 1), 0.0)
            v = (self._prior_var(a["u_c"], a["s_c"], a["ss_c"], n_c, s_c, ss_c)
                 / np.maximum(n_c, 1))
        else:
            block = (n_c >= 1) & (n_p >= 1)
            theta = np.where(block, s_c / np.maximum(n_c, 1) - s_p / np.maximum(n_p, 1), 0.0)
            v = (self._prior_var(a["u_c"], a["s_c"], a["ss_c"], n_c, s_c, ss_c)
                 / np.maximum(n_c, 1)
                 + self._prior_var(a["u_p"], a["s_p"], a["ss_p"], n_p, s_p, ss_p)
                 / np.maximum(n_p, 1))
        live = block & (a["decision"] == UNDECIDED) & np.isfinite(v)
        w = np.where(live, 1.0 / np.maximum(np.nan_to_num(v, nan=1.0), 1e-300), 0.0)
        a["score"] += w * theta
        a["info"] += w
        a["blocks"] += live
        for name, val in (("n_c", rows_c), ("u_c", n_c), ("s_c", s_c), ("ss_c", ss_c),
                          ("n_p", rows_p), ("u_p", n_p), ("s_p", s_p), ("ss_p", ss_p)):
            a[name] += np.where(a["decision"] == UNDECIDED, val, 0.0)
        return self._decide()

    def update_counters(self, inc: dict[str, np.ndarray]) -> np.ndarray:
        """One tick from a fleet canary server's counters between two reads
        (:func:`mleops.serving.fleet_tally.increment`: arm -> (units, sum, sumsq, rows) x K):
        the paired differences in paired mode, else each arm's request means."""
        if self.config.mode == "paired":
            d = np.asarray(inc["paired"], float)
            return self.update(tuple(d), (d[0], np.zeros(self.k), np.zeros(self.k), d[3]))
        return self.update(tuple(np.asarray(inc["canary"], float)),
                           tuple(np.asarray(inc["champion"], float)))

    def _prior_var(self, u, s, ss, n_new, s_new, ss_new) -> np.ndarray:
        """Variance of one request mean, from the key's earlier requests only (predictable:
        a block weighted by its own spread would overweight the blocks that look precise),
        as the upper 90% confidence bound of the sample variance (a plug-in variance below
        the truth would make the mixture exceed its null expectation of 1), floored at
        ``scale_floor`` times the fleet's pooled sd. NaN until ``min_units`` requests: such
        a block only feeds the variance."""
        from scipy.stats import chi2

        ready = u >= self.config.min_units
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.maximum((ss - s * s / u) / (u - 1), 0.0)
            upper = var * (u - 1) / chi2.ppf(0.1, np.maximum(u - 1, 1))
        upper = np.where(ready, upper, np.nan)
        pooled = np.nanmedian(upper) if np.isfinite(upper).any() else np.nan
        floor = (self.config.scale_floor ** 2) * (pooled if np.isfinite(pooled) else 0.0)
        return np.where(ready, np.maximum(upper, floor), np.nan)

    def _decide(self) -> np.ndarray:
        cfg, a = self.config, self.a
        und = a["decision"] == UNDECIDED
        log_drop, log_safe = log_e(cfg.test, a["score"], a["info"])
        ready = ((np.minimum(a["n_c"], a["n_p"]) >= cfg.min_rows)
                 & (np.minimum(a["u_c"], a["u_p"]) >= cfg.min_units)
                 & (a["blocks"] >= cfg.min_blocks))
        # stopped values: frozen where decided, current where not; unready keys count as 1
        cur_drop = np.where(und, np.where(ready, log_drop, 0.0), a["log_drop"])
        cur_safe = np.where(und, np.where(ready, log_safe, 0.0), a["log_safe"])
        back = e_bh_mask(cur_drop, cfg.fdr) & und & ready
        good = e_bh_mask(cur_safe, cfg.fdr) & und & ready & ~back
        now = back | good
        a["decision"][back] = ROLLBACK
        a["decision"][good] = PROMOTE
        a["tick"][now] = self.ticks
        a["log_drop"][now] = log_drop[now]
        a["log_safe"][now] = log_safe[now]
        return np.flatnonzero(now)

    def stopped_log_drop(self) -> np.ndarray:
        """Per key, the log e-value against "not worse": as decided, or current if not
        (what status, the judge and the worst-keys list rank by)."""
        cur, _ = log_e(self.config.test, self.a["score"], self.a["info"])
        return np.where(self.a["decision"] == UNDECIDED, cur, self.a["log_drop"])

    def counts(self) -> dict[str, int]:
        d = self.a["decision"]
        return {NAMES[c]: int((d == c).sum()) for c in NAMES}


__all__ = ["FleetConfig", "FleetEvidence", "e_bh_mask"]
