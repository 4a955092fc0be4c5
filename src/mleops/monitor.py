"""Drift of the live log-likelihood under the champion: a CUSUM with a stated false-alarm rate.

A fixed cut-off on the windowed average log-likelihood either pages on noise (short windows)
or misses slow drift (long ones). Here each window of live rows becomes a z-score against the
champion's held-out baseline, ``Z = sqrt(n) (mean_ll - mu_ref) / sd``, N(0, 1) for a window
of rows from the baseline's distribution (by the CLT, whatever the family), and a one-sided
lower CUSUM ``S = max(0, S - clip(Z, -c, c) - k)`` accumulates evidence of a *sustained* drop.
It alarms when ``S > h``.

How h is chosen: the caller states a false-alarm probability ``alpha`` over a horizon of
``H`` windows. The CUSUM run length is close to geometric, so ``P(false alarm within H) <=
alpha`` holds when the in-control average run length is ``ARL0 = H / -log(1 - alpha)``;
Siegmund's approximation ``ARL0 = (exp(2k b) - 2k b - 1) / (2 k^2)``, ``b = h + 1.166``, is
solved for ``h``. (Simulated: mean run lengths within 1-5% of ARL0, and the early-alarm
probability below the geometric bound, i.e. conservative.)

The baseline is itself an estimate from ``n_b`` held-out rows; a baseline that is too high
by chance would raise the false-alarm rate without bound. So the budget is split: the
reference ``mu_ref`` is the one-sided ``1 - alpha/2`` lower confidence bound of the baseline
mean and the CUSUM gets ``alpha/2`` (union bound: total <= alpha).

Robustness: per-row log-likelihoods are winsorised at ``row_clip`` baseline sds (row input
only: a single absurd row cannot dominate a window) and window z-scores at ``clip``, so an
alarm needs at least ``ceil(h / (clip - k))`` bad windows: a sustained drop, not a spike.

Row input (files, streams) and sums input (Prometheus' cumulative ``mleops_rows_total``,
``mleops_loglik_sum``, ``mleops_loglik_sq_sum``) feed the same window update, so both give
the same statistic on the same windows. Detector state round-trips through
``to_dict``/``from_dict`` so a monitor run from cron can resume where the last one stopped.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from scipy import optimize, stats

from .artifact import ModelArtifact
from .errors import DataError, MleopsError

#: Siegmund's correction for the overshoot of a Gaussian random walk over the threshold
_OVERSHOOT = 1.166
PROM_METRICS = ("mleops_rows_total", "mleops_loglik_sum", "mleops_loglik_sq_sum")


class MonitorError(MleopsError, RuntimeError):
    """Live metrics could not be read (Prometheus unreachable or a malformed answer)."""


# --- baseline --------------------------------------------------------------------------------
@dataclass
class Baseline:
    """Per-row log-likelihood of the champion on rows it should score well: mean, sd, rows."""

    mean: float
    sd: float
    n: int | None  # rows behind the estimate; None = known exactly
    source: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.sd) and self.sd > 0):
            raise DataError(f"baseline needs a finite mean and a positive sd, got mean "
                            f"{self.mean}, sd {self.sd} ({self.source})")

    @classmethod
    def from_loglik(cls, ll, source: str = "held-out rows") -> Baseline:
        ll = np.asarray(ll, dtype=np.float64).ravel()
        if ll.size < 2 or not np.isfinite(ll).all():
            raise DataError(f"baseline: need >= 2 finite log-likelihoods, got {ll.size}")
        return cls(float(ll.mean()), float(ll.std(ddof=1)), int(ll.size), source)

    def lower_mean(self, alpha: float) -> float:
        """One-sided ``1 - alpha`` lower bound of the mean: false alarms stay bounded."""
        if not self.n:
            return self.mean
        return self.mean - float(stats.norm.ppf(1 - alpha)) * self.sd / math.sqrt(self.n)


def model_baseline(artifact: ModelArtifact, *, n: int = 100_000, seed: int = 0) -> Baseline:
    """Model-implied baseline from ``n`` draws of the model itself.

    The fallback when no held-out rows are known: it equals the held-out baseline only for a
    well-specified model, and needs a one-sample, uncensored family.
    """
    import jax

    if artifact.features:
        raise DataError("a regression model has no model-implied baseline (it depends on the "
                        "covariates): give held-out rows (--baseline-data)")
    x = artifact.fam.sample(jax.random.PRNGKey(seed), artifact.values, (n,))
    return Baseline.from_loglik(artifact.loglik_rows(np.asarray(x)),
                                source=f"model-implied ({n} simulated rows, seed {seed})")


def registry_baseline(registry, name: str, version: str, artifact: ModelArtifact) -> Baseline | None:
    """Held-out baseline the training run of ``name`` v``version`` logged, None if none.

    The pipeline logs ``heldout_avg_loglik`` and ``heldout_n``; when ``heldout_sd_loglik`` is
    missing the sd is model-implied (said in ``source``).
    """
    run_id = next((v["run_id"] for v in registry.list_versions(name)
                   if v["version"] == str(version)), None)
    if not run_id:
        return None
    metrics = registry._call(registry.client.get_run, run_id).data.metrics
    if "heldout_avg_loglik" not in metrics:
        return None
    source = f"held-out rows of {name} v{version} (run {run_id})"
    sd = metrics.get("heldout_sd_loglik")
    if sd is None:
        sd = model_baseline(artifact).sd
        source += "; sd model-implied (run logged no heldout_sd_loglik)"
    return Baseline(float(metrics["heldout_avg_loglik"]), float(sd),
                    int(metrics.get("heldout_n", 0)) or None, source)


# --- threshold -------------------------------------------------------------------------------
def siegmund_arl(k: float, h: float) -> float:
    """In-control average run length (windows) of the CUSUM with reference k, threshold h."""
    b = 2.0 * k * (h + _OVERSHOOT)
    return (math.expm1(b) - b) / (2.0 * k * k)


def cusum_threshold(k: float, arl: float) -> float:
    """The h whose Siegmund in-control ARL is ``arl`` windows."""
    if k <= 0 or arl <= 1:
        raise ValueError(f"need k > 0 and a target ARL > 1, got k={k}, arl={arl}")
    if siegmund_arl(k, 0.0) >= arl:
        return 0.0
    hi = 1.0
    while siegmund_arl(k, hi) < arl:
        hi *= 2.0
    return float(optimize.brentq(lambda h: siegmund_arl(k, h) - arl, 0.0, hi))


def target_arl(false_alarm: float, horizon: int) -> float:
    """ARL0 giving P(false alarm within ``horizon`` windows) <= ``false_alarm``."""
    return horizon / -math.log1p(-false_alarm)


@dataclass
class CusumConfig:
    """Detector settings. ``window``: rows per window (row input); ``min_rows``: smaller
    windows (sums input) are merged into the next; ``k`` in window-z units: k = 0.5 is
    quickest for a drop of one window sd, i.e. ``1/sqrt(window)`` row sds."""

    false_alarm: float = 0.01
    horizon: int = 1000
    k: float = 0.5
    clip: float = 4.0
    row_clip: float | None = 6.0
    window: int = 100
    min_rows: int = 30
    history: int = 10_000  # windows kept for reports and plots

    def __post_init__(self) -> None:
        if not 0 < self.false_alarm < 1:
            raise DataError(f"false-alarm probability must lie in (0, 1), got {self.false_alarm}")
        if self.horizon < 1 or self.window < 1 or self.min_rows < 1:
            raise DataError("horizon, window and min_rows must be positive")
        if self.k <= 0 or self.clip <= self.k:
            raise DataError(f"need 0 < k < clip, got k={self.k}, clip={self.clip}")


# --- detector --------------------------------------------------------------------------------
@dataclass
class DriftReport:
    alarm: bool
    alarm_at_row: int | None
    alarm_window: int | None
    windows: list[dict]
    statistic: list[float]
    baseline: dict
    threshold: float
    reference_mean: float
    rows: int
    pending_rows: int
    config: dict
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _State:
    s: float = 0.0
    rows: int = 0
    n_windows: int = 0
    pending: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # n, sum, sumsq
    alarm_at_row: int | None = None
    alarm_window: int | None = None
    windows: list[dict] = field(default_factory=list)


class CusumDetector:
    """One-sided lower CUSUM on window z-scores of the log-likelihood (see module doc)."""

    def __init__(self, baseline: Baseline, config: CusumConfig | None = None,
                 state: _State | None = None) -> None:
        self.baseline, self.config = baseline, config or CusumConfig()
        alpha = self.config.false_alarm
        if baseline.n:  # split the budget between baseline error and the CUSUM
            alpha /= 2
        self.reference_mean = baseline.lower_mean(alpha)
        self.h = cusum_threshold(self.config.k, target_arl(alpha, self.config.horizon))
        self.state = state or _State()

    # --- input ----------------------------------------------------------------------------
    def update_rows(self, ll) -> None:
        """Per-row log-likelihoods, in arrival order; full windows are scored at once."""
        ll = np.asarray(ll, dtype=np.float64).ravel()
        if not np.isfinite(ll).all():
            raise DataError(f"{int((~np.isfinite(ll)).sum())} non-finite log-likelihood(s)")
        if self.config.row_clip is not None:
            r = self.config.row_clip * self.baseline.sd
            ll = np.clip(ll, self.baseline.mean - r, self.baseline.mean + r)
        i, w, p = 0, self.config.window, self.state.pending
        while i < ll.size:
            take = ll[i:i + max(w - int(p[0]), 1)]
            p[0] += take.size
            p[1] += float(take.sum())
            p[2] += float(np.square(take).sum())
            i += take.size
            if p[0] >= w:
                self._flush()

    def update_sums(self, n: float, total: float, total_sq: float) -> None:
        """One window given as (rows, sum of ll, sum of ll^2), e.g. from Prometheus."""
        if n < 0 or not all(map(math.isfinite, (n, total, total_sq))):
            raise DataError(f"window sums must be finite with n >= 0, got ({n}, {total}, "
                            f"{total_sq})")
        p = self.state.pending
        p[0], p[1], p[2] = p[0] + n, p[1] + total, p[2] + total_sq
        if p[0] >= self.config.min_rows:
            self._flush()

    def finish(self) -> None:
        """End of a finite input: score a last partial window if it has ``min_rows``."""
        if self.state.pending[0] >= self.config.min_rows:
            self._flush()

    def _flush(self) -> None:
        st, cfg, sd = self.state, self.config, self.baseline.sd
        n, s, ss = st.pending
        n = int(round(n))
        st.pending[:] = [0.0, 0.0, 0.0]  # in place: update_rows holds this list
        mean = s / n
        var = max(ss / n - mean * mean, 0.0) * n / max(n - 1, 1)
        z = math.sqrt(n) * (mean - self.reference_mean) / sd
        st.s = max(0.0, st.s - min(max(z, -cfg.clip), cfg.clip) - cfg.k)
        st.rows += n
        st.n_windows += 1
        if st.alarm_at_row is None and st.s > self.h:
            st.alarm_at_row, st.alarm_window = st.rows, st.n_windows - 1
        st.windows.append({"index": st.n_windows - 1, "end_row": st.rows, "n": n,
                           "mean": mean, "sd": math.sqrt(var), "z": z, "statistic": st.s})
        del st.windows[:-cfg.history]

    # --- output ---------------------------------------------------------------------------
    @property
    def alarm(self) -> bool:
        return self.state.alarm_at_row is not None

    def report(self) -> DriftReport:
        st, cfg, b = self.state, self.config, self.baseline
        if self.alarm:
            w = next((w for w in st.windows if w["index"] == st.alarm_window), None)
            last = (f"; that window's mean {w['mean']:.4g} vs baseline {b.mean:.4g} "
                    f"(z = {w['z']:.2f})") if w else ""
            reason = (f"drift: sustained drop of the log-likelihood; CUSUM > h = {self.h:.3g} "
                      f"at row {st.alarm_at_row} (window {st.alarm_window}){last}")
        elif not st.n_windows:
            reason = (f"no windows scored yet ({int(st.pending[0])} rows pending): no "
                      f"evidence either way (is the telemetry flowing?)")
        else:
            top = max((w["statistic"] for w in st.windows), default=0.0)
            reason = (f"no drift: CUSUM max {top:.3g} <= h = {self.h:.3g} over {st.n_windows} "
                      f"windows ({st.rows} rows)")
        reason += (f"; false-alarm probability <= {cfg.false_alarm:g} per {cfg.horizon} "
                   f"windows")
        return DriftReport(alarm=self.alarm, alarm_at_row=st.alarm_at_row,
                           alarm_window=st.alarm_window, windows=list(st.windows),
                           statistic=[w["statistic"] for w in st.windows],
                           baseline=asdict(b), threshold=self.h,
                           reference_mean=self.reference_mean, rows=st.rows,
                           pending_rows=int(st.pending[0]), config=asdict(cfg), reason=reason)

    # --- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"baseline": asdict(self.baseline), "config": asdict(self.config),
                "state": asdict(self.state)}

    @classmethod
    def from_dict(cls, d: dict) -> CusumDetector:
        try:
            state = _State(**{f.name: d["state"][f.name] for f in fields(_State)
                              if f.name in d["state"]})
            return cls(Baseline(**d["baseline"]), CusumConfig(**d["config"]), state)
        except (KeyError, TypeError) as e:
            raise DataError(f"detector state is malformed: {e!r}") from None


def monitor_rows(ll, baseline: Baseline, config: CusumConfig | None = None) -> DriftReport:
    """Drift report for a finite sequence of per-row log-likelihoods (in arrival order)."""
    det = CusumDetector(baseline, config)
    det.update_rows(ll)
    det.finish()
    return det.report()


def monitor_sums(windows: Iterable[tuple[float, float, float]], baseline: Baseline,
                 config: CusumConfig | None = None) -> DriftReport:
    """Drift report for windows given as (rows, sum of ll, sum of ll^2)."""
    det = CusumDetector(baseline, config)
    for n, s, ss in windows:
        det.update_sums(n, s, ss)
    det.finish()
    return det.report()


# --- Prometheus ------------------------------------------------------------------------------
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
            raise MonitorError(f"Prometheus at {url}: HTTP {e.code} for {promql!r}") from None
    except (urllib.error.URLError, OSError) as e:
        raise MonitorError(f"Prometheus at {url} unreachable: "
                           f"{getattr(e, 'reason', None) or e}") from None
    try:
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise MonitorError(f"Prometheus at {url} rejected {promql!r}: "
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
        raise MonitorError(f"Prometheus at {url}: malformed answer to {promql!r}: {e}") from None


def prometheus_totals(url: str, model: str, version: str, *, timeout: float = 10.0,
                      at: float | None = None) -> tuple[float, float, float]:
    """Cumulative (rows, sum ll, sum ll^2) of one registered version, summed over pods."""
    sel = f'registered_model="{model}",registered_version="{version}"'
    out = []
    for metric in PROM_METRICS:
        res = query_prometheus(url, f"sum({metric}{{{sel}}})", timeout=timeout, at=at)
        out.append(float(res) if isinstance(res, float) else sum(v for _, v in res))
    return out[0], out[1], out[2]


def watch_prometheus(detector: CusumDetector, url: str, model: str, version: str, *,
                     interval: float, duration: float, timeout: float = 10.0,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.time) -> DriftReport:
    """Poll the totals every ``interval`` s for ``duration`` s; stops early on an alarm.

    Each window is the difference of consecutive snapshots. A total going down (a server
    restarted) is no window: the next difference starts from the new totals.
    """
    prev = prometheus_totals(url, model, version, timeout=timeout, at=clock())
    for _ in range(max(1, int(duration // interval))):
        sleep(interval)
        cur = prometheus_totals(url, model, version, timeout=timeout, at=clock())
        d = [c - p for c, p in zip(cur, prev)]
        prev = cur
        if d[0] > 0 and d[2] >= 0:
            detector.update_sums(*d)
        if detector.alarm:
            break
    return detector.report()


__all__ = ["Baseline", "CusumConfig", "CusumDetector", "DriftReport", "MonitorError",
           "PROM_METRICS", "cusum_threshold", "model_baseline", "monitor_rows", "monitor_sums",
           "prometheus_totals", "query_prometheus", "registry_baseline", "siegmund_arl",
           "target_arl", "watch_prometheus"]
