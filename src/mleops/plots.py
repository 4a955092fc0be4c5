"""PNG plots for operating a model: log-likelihood drift, PIT calibration, canary rollouts.

Like :mod:`mleops.gate.report`, figures use matplotlib's Agg canvas directly (no pyplot, no global
backend switch), imported lazily, so headless monitors and CLI processes that never plot do
not pay for matplotlib. Every function writes ``path`` (directories created) and returns it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from mleops.errors import DataError
from mleops.gate.calibration import pit_values

#: one point of a live series: (rows or time, mean log-likelihood, CI low, CI high)
SeriesPoint = tuple[float, float, float, float]
_BLUE, _RED, _GREEN, _ORANGE, _GREY = "#4C72B0", "#C44E52", "#55A868", "#DD8452", "#777777"


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_loglik_trend(report, path: str, *, title: str = "live log-likelihood") -> str:
    """Windowed mean log-likelihood against the baseline's 95% band, with the CUSUM below.

    ``report``: a :class:`mleops.monitor.DriftReport` or its ``to_dict()``. The band is where
    a window mean of that many rows falls 95% of the time without drift.
    """
    r = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    w = r["windows"]
    if not w:
        raise DataError("the drift report has no windows to plot")
    x = np.array([v["end_row"] for v in w], float)
    mean = np.array([v["mean"] for v in w], float)
    n = np.array([v["n"] for v in w], float)
    b = r["baseline"]
    half = 1.96 * b["sd"] / np.sqrt(n)
    fig, axes = _figure(2, 1, (8.0, 5.5))
    top, bottom = axes[0, 0], axes[1, 0]
    top.fill_between(x, b["mean"] - half, b["mean"] + half, step="mid", color=_GREY,
                     alpha=0.25, label="baseline 95% band (window mean)")
    top.axhline(b["mean"], color=_GREY, lw=1.5, label="baseline mean")
    top.axhline(r["reference_mean"], color=_GREY, lw=1, ls=":", label="reference (lower bound)")
    top.plot(x, mean, "o-", color=_BLUE, ms=3, lw=1.2, label="window mean")
    bottom.plot(x, r["statistic"], color=_BLUE, lw=1.2, label="CUSUM")
    bottom.axhline(r["threshold"], color=_RED, ls="--", lw=1.2,
                   label=f"h = {r['threshold']:.3g}")
    if r["alarm"]:
        for ax in (top, bottom):
            ax.axvline(r["alarm_at_row"], color=_RED, lw=2, alpha=0.8,
                       label=f"drift alarm (row {r['alarm_at_row']})")
    top.set_ylabel("mean log-likelihood / row")
    top.set_title(title + ("  -  DRIFT" if r["alarm"] else "  -  no drift"))
    top.legend(loc="lower left", fontsize=7)
    bottom.set_xlabel("rows")
    bottom.set_ylabel("CUSUM statistic")
    bottom.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def plot_pit(pit: Sequence[float] | np.ndarray, path: str, *, title: str = "PIT") -> str:
    """PIT histogram and a reliability diagram (nominal vs empirical central coverage).

    Under a calibrated model the PIT is uniform: a flat histogram, coverage on the diagonal.
    """
    from mleops.gate.calibration import pit_summary
    from mleops.gate.report import plot_pit_axes

    u = np.asarray(pit, dtype=np.float64).ravel()
    if u.size == 0 or not ((u >= 0) & (u <= 1)).all():
        raise DataError("PIT values must be a non-empty list of numbers in [0, 1]")
    fig, axes = _figure(1, 2, (10.0, 4.0))
    hist = axes[0, 0]
    plot_pit_axes(hist, pit_summary(u))
    hist.containers[0].set_label("rows")  # the shared helper says "held-out rows"
    hist.legend(loc="lower center", fontsize=8)
    hist.set_title(f"{title} histogram  (n = {u.size})")
    ax = axes[0, 1]
    levels = np.linspace(0.05, 0.95, 19)
    cover = np.array([np.mean(np.abs(u - 0.5) <= lv / 2) for lv in levels])
    band = 1.96 * np.sqrt(levels * (1 - levels) / u.size)
    ax.fill_between(levels, levels - band, levels + band, color=_RED, alpha=0.12,
                    label="95% band (calibrated)")
    ax.plot([0, 1], [0, 1], color=_RED, lw=1.5, label="perfect calibration")
    ax.plot(levels, cover, "o-", color=_BLUE, ms=3, label="empirical")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal central interval level")
    ax.set_ylabel("empirical coverage")
    ax.set_title("reliability: interval coverage")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _series(points: Sequence[SeriesPoint], what: str) -> np.ndarray:
    a = np.asarray(points, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 4 or a.shape[0] == 0 or not np.isfinite(a).all():
        raise DataError(f"{what}: expected a non-empty list of finite (x, mean, ci_low, ci_high)")
    return a


def plot_canary(champion_series: Sequence[SeriesPoint], canary_series: Sequence[SeriesPoint],
                path: str, *, events: Sequence[tuple[float, str]] = (),
                title: str = "canary rollout") -> str:
    """Live mean log-likelihood of champion and canary with their CIs during a rollout.

    Each series is a list of ``(rows_or_time, mean, ci_low, ci_high)``; ``events`` a list of
    ``(rows_or_time, label)`` drawn as vertical lines: labels containing "promot" green,
    "rollback" red, anything else (e.g. "traffic 25%") grey.
    """
    fig, axes = _figure(1, 1, (8.0, 4.5))
    ax = axes[0, 0]
    for pts, name, color in ((champion_series, "champion", _BLUE),
                             (canary_series, "canary", _ORANGE)):
        a = _series(pts, name)
        ax.fill_between(a[:, 0], a[:, 2], a[:, 3], color=color, alpha=0.2)
        ax.plot(a[:, 0], a[:, 1], "o-", color=color, ms=3, lw=1.3, label=f"{name} (95% CI)")
    for at, label in events:
        low = label.lower()
        color = _GREEN if "promot" in low else _RED if "rollback" in low else _GREY
        ax.axvline(float(at), color=color, lw=1.5, ls="--")
        ax.annotate(label, (float(at), 1.0), xycoords=("data", "axes fraction"), rotation=90,
                    va="top", ha="right", fontsize=8, color=color)
    ax.set_xlabel("rows / time")
    ax.set_ylabel("mean log-likelihood / row")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


__all__ = ["SeriesPoint", "pit_values", "plot_canary", "plot_loglik_trend", "plot_pit"]
