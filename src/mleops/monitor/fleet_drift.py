"""Drift per key of a fleet: one CUSUM per key, alarms selected across keys at an FDR.

Each key's live rows are cut into windows of ``window`` rows of that key and scored as one
model's are (:mod:`mleops.monitor.cusum`: window z-scores against the key's baseline, a
one-sided lower CUSUM with reference ``k``, z clipped at ``clip``, rows winsorised at
``row_clip`` baseline sds). A fixed threshold per key would page on noise about
``keys x false_alarm`` times; instead every key gets a p-value for "no drift so far" from
its CUSUM's running maximum ``M`` over the horizon of ``H`` windows (Siegmund's ARL, the run
length close to geometric: ``p = 1 - exp(-H / ARL(k, M))``), and the keys that alarm are
those Benjamini-Hochberg selects at ``fdr``.

Why the running maximum is fine here: ``p`` is a p-value for the maximum over the whole
horizon, and a look before the horizon's end sees a smaller maximum, so a larger p-value;
BH is monotone, so every key that alarms at any look is in the BH set of the horizon's end.
Alarms are sticky, and the FDR of all alarms raised is at most that of the final set
(keys independent, or positively dependent: BH's PRDS condition). A baseline estimated from
held-out rows is lowered to its one-sided ``1 - fdr/(2K)`` confidence bound and BH runs at
``fdr/2`` (union bound: FDR <= fdr); a model-implied baseline (exact for a well-specified
model) uses ``fdr`` whole. Serial correlation within a key (a slow hour) would make windows
noisier than ``sd/sqrt(window)``: each window's z is widened by the AR(1) factor at the lag-1
correlation pooled over all keys' windows (each around its own mean; a key's own windows are
too few to estimate one). **Conditions:** rows AR(1)-like with one correlation across keys
(or less), keys independent or PRDS.

State is O(keys) numbers (each key's CUSUM, its maximum, its partial window, counts),
JSON-ready, resumable across monitor runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from mleops.errors import DataError
from mleops.monitor.cusum import _OVERSHOOT as OVERSHOOT
from mleops.monitor.cusum import CusumConfig, ar1_window_factor
from mleops.multiplicity import bh

FIELDS = ("s", "s_max", "n_p", "s_p", "windows", "rows", "alarm", "alarm_window")


@dataclass(frozen=True)
class KeyBaselines:
    """Per key: the baseline mean and sd of the per-row log-likelihood, and the rows behind
    each (None: model-implied, exact)."""

    mean: np.ndarray
    sd: np.ndarray
    n: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not (np.isfinite(self.mean).all() and np.isfinite(self.sd).all()
                and (self.sd > 0).all()):
            raise DataError(f"key baselines need finite means and positive sds ({self.source})")


def p_values(s_max: np.ndarray, k: float, horizon: int) -> np.ndarray:
    """P(a CUSUM in control reaches ``s_max`` within ``horizon`` windows), per key."""
    b = 2.0 * k * (np.maximum(np.asarray(s_max, float), 0.0) + OVERSHOOT)
    with np.errstate(over="ignore"):  # an ARL past float64: p is 0 to machine precision
        arl = (np.expm1(b) - b) / (2.0 * k * k)  # Siegmund's, as cusum.siegmund_arl
    return -np.expm1(-horizon / arl)


class FleetDrift:
    """The per-key CUSUMs of one fleet version (``baselines`` by its table's rows)."""

    def __init__(self, baselines: KeyBaselines, config: CusumConfig | None = None,
                 fdr: float = 0.05):
        if not 0 < fdr < 1:
            raise DataError(f"fdr must be in (0, 1), got {fdr}")
        self.b, self.config, self.fdr = baselines, config or CusumConfig(), float(fdr)
        self.k = baselines.mean.size
        estimated = baselines.n is not None
        self.q = self.fdr / 2 if estimated else self.fdr
        if estimated:  # each key's reference: a lower bound, all K at once with prob fdr/2
            z = stats.norm.isf(self.fdr / (2 * self.k))
            self.ref = baselines.mean - z * baselines.sd / np.sqrt(np.maximum(baselines.n, 1))
        else:
            self.ref = baselines.mean.copy()
        self.a = {f: np.zeros(self.k) for f in FIELDS}
        self.a["alarm_window"][:] = -1
        self.lag = [0.0, 0.0, 0.0]  # pooled demeaned lag-1 products, squares, windows

    def update(self, key_index: np.ndarray, ll: np.ndarray) -> None:
        """Rows in arrival order (``key_index``: the key's row in the table; < 0 ignored)."""
        key, ll = np.asarray(key_index, np.int64), np.asarray(ll, float)
        ok = key >= 0
        if not np.isfinite(ll[ok]).all():
            raise DataError("non-finite log-likelihoods in the live rows")
        key, ll = key[ok], ll[ok]
        if self.config.row_clip is not None:
            r = self.config.row_clip * self.b.sd[key]
            ll = np.clip(ll, self.b.mean[key] - r, self.b.mean[key] + r)
        order = np.argsort(key, kind="stable")
        keys, starts = np.unique(key[order], return_index=True)
        parts = [(int(i), ll[order[lo:hi]]) for i, lo, hi in
                 zip(keys, starts, [*starts[1:], order.size])]
        if self.config.serial:  # pooled over keys first: every window below uses it
            for i, rows in parts:
                self._lag1(i, rows)
        f = self.serial_factor
        for i, rows in parts:
            self._key(i, rows, f)
        self._select()

    def _lag1(self, i: int, ll: np.ndarray) -> None:
        """Add this key's complete windows in ``ll`` to the pooled lag-1 sums, each window
        around its own mean (a level shift is not taken for correlation)."""
        w, n0 = self.config.window, int(self.a["n_p"][i])
        first = (w - n0) % w if n0 else 0  # windows wholly inside ll start here
        m = (ll.size - first) // w
        if m < 1 or w < 3:
            return
        x = ll[first:first + m * w].reshape(m, w)
        e = x - x.mean(axis=1, keepdims=True)
        self.lag[0] += float((e[:, 1:] * e[:, :-1]).sum())
        self.lag[1] += float((e * e).sum())
        self.lag[2] += m

    @property
    def serial_factor(self) -> float:
        """Var(window mean) over var(row)/window under the pooled AR(1) lag-1 correlation
        (Kendall's bias correction for the window means), never below 1."""
        num, den, m = self.lag
        if not self.config.serial or m < 20 or den <= 0:
            return 1.0
        w = self.config.window
        r = (num / den + 1.0 / w) / (1.0 - 4.0 / w) if w > 4 else num / den
        return max(1.0, ar1_window_factor(r, w))

    def _key(self, i: int, ll: np.ndarray, factor: float) -> None:
        a, cfg, w = self.a, self.config, self.config.window
        n0, s0 = int(a["n_p"][i]), a["s_p"][i]
        c = np.concatenate([[0.0], np.cumsum(ll)])
        ends = np.arange(w - n0, ll.size + 1, w)  # rows of ll that close each window
        if ends.size:
            sums = np.diff(np.concatenate([[0.0], c[ends]]))
            sums[0] += s0
            z = math.sqrt(w / factor) * (sums / w - self.ref[i]) / self.b.sd[i]
            s = a["s"][i]
            for zi in np.clip(z, -cfg.clip, cfg.clip):
                s = max(0.0, s - zi - cfg.k)
                a["s_max"][i] = max(a["s_max"][i], s)
                a["windows"][i] += 1
            a["s"][i] = s
            a["n_p"][i], a["s_p"][i] = ll.size - ends[-1], c[-1] - c[ends[-1]]
        else:
            a["n_p"][i], a["s_p"][i] = n0 + ll.size, s0 + c[-1]
        a["rows"][i] += ll.size

    def _select(self) -> None:
        a = self.a
        new = bh(p_values(a["s_max"], self.config.k, self.config.horizon), self.q) & (
            a["alarm"] == 0)
        a["alarm"][new] = 1
        a["alarm_window"][new] = a["windows"][new]

    @property
    def alarmed(self) -> np.ndarray:
        return np.flatnonzero(self.a["alarm"] > 0)

    def report(self, labels: list[str], worst: int = 10) -> dict[str, Any]:
        p = p_values(self.a["s_max"], self.config.k, self.config.horizon)
        order = np.argsort(p, kind="stable")[:worst]
        row = lambda i: {"key": labels[i], "p_value": float(p[i]),  # noqa: E731
                         "statistic_max": float(self.a["s_max"][i]),
                         "windows": int(self.a["windows"][i]), "rows": int(self.a["rows"][i])}
        return {"alarm": bool(self.alarmed.size), "keys": self.k,
                "alarmed_keys": [labels[i] for i in self.alarmed],
                "fdr": self.fdr, "bh_level": self.q, "horizon": self.config.horizon,
                "keys_with_windows": int((self.a["windows"] > 0).sum()),
                # beyond its horizon a key's p-value no longer holds: start a new detector
                "keys_past_horizon": int((self.a["windows"] > self.config.horizon).sum()),
                "rows": int(self.a["rows"].sum()), "baseline": self.b.source,
                "serial_factor": self.serial_factor,
                "worst_keys": [row(int(i)) for i in order]}

    def to_dict(self) -> dict[str, Any]:
        b = self.b
        return {"config": asdict(self.config), "fdr": self.fdr,
                "baselines": {"mean": b.mean.tolist(), "sd": b.sd.tolist(),
                              "n": None if b.n is None else b.n.tolist(), "source": b.source},
                "lag": list(self.lag), **{f: self.a[f].tolist() for f in FIELDS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FleetDrift:
        b = d["baselines"]
        out = cls(KeyBaselines(np.asarray(b["mean"]), np.asarray(b["sd"]),
                               None if b["n"] is None else np.asarray(b["n"]), b["source"]),
                  CusumConfig(**d["config"]), d["fdr"])
        for f in FIELDS:
            out.a[f] = np.asarray(d[f], float)
        out.lag = [float(v) for v in d.get("lag", [0.0, 0.0, 0.0])]
        return out


__all__ = ["FleetDrift", "KeyBaselines", "p_values"]
