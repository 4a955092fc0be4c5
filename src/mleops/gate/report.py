"""A self-contained evaluation report: calibration plot plus the gate's numbers and reasons.

``report.html`` embeds the plot as base64 so it survives being uploaded alone (an MLflow
artifact, a CI attachment). Plots use matplotlib's Agg canvas directly, with no pyplot and no
global backend switch, so importing or calling this never disturbs a user's interactive
backend and works on headless workers.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os

from mleops.gate.decision import GateDecision


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_pit_axes(ax, calib: dict) -> None:
    counts = calib.get("pit_hist") or []
    k = len(counts)
    if k:
        width = 1.0 / k
        ax.bar([(i + 0.5) * width for i in range(k)], counts, width=width * 0.95,
               color="#4C72B0", label="held-out rows")
        expected = sum(counts) / k
        ax.axhline(expected, color="#C44E52", lw=2, label="uniform (perfect calibration)")
        band = 1.96 * math.sqrt(expected * (1 - 1 / k))
        ax.axhspan(max(expected - band, 0), expected + band, color="#C44E52", alpha=0.12,
                   label="95% band under uniformity")
    pit = "randomized PIT" if calib.get("kind") == "count" else "PIT"
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"{pit}  u = F(x)")
    ax.set_ylabel("rows")
    ks = calib.get("ks")
    ax.set_title(f"{pit} histogram" + (f"  (KS = {ks:.4f})" if ks is not None else ""))
    ax.legend(loc="lower center", fontsize=8)


def _plot_reliability(ax, calib: dict) -> None:
    table = calib.get("reliability") or []
    ax.plot([0, 1], [0, 1], color="#C44E52", lw=1.5, label="perfect calibration")
    if table:
        total = sum(r["count"] for r in table)
        ax.scatter([r["mean_pred"] for r in table], [r["obs_freq"] for r in table],
                   s=[20 + 400 * r["count"] / total for r in table], color="#4C72B0",
                   zorder=3, label="bins (area ~ rows)")
        ax.plot([r["mean_pred"] for r in table], [r["obs_freq"] for r in table],
                color="#4C72B0", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency")
    ece = calib.get("ece")
    ax.set_title("reliability diagram" + (f"  (ECE = {ece:.4f})" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize=8)


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _table(rows: dict) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in rows.items())
    return f"<table>{body}</table>"


_CSS = ("body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
        "padding:3px 8px;text-align:left}th{background:#f4f4f4}.pass{color:#1a7f37}"
        ".fail{color:#cf222e}li{margin:0.3em 0}")


def write_report(calib: dict, decision: GateDecision | None, out_dir: str, *,
                 title: str = "mleops evaluation report") -> dict[str, str]:
    """Write ``pit.png`` and a self-contained ``report.html`` into ``out_dir``.

    The plot is a PIT histogram (continuous/count models) or a reliability diagram (binary).
    Returns ``{"pit_png": path, "report_html": path}``.
    """
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = _figure()
    if calib.get("kind") == "binary":
        _plot_reliability(ax, calib)
    else:
        plot_pit_axes(ax, calib)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    png_path = os.path.join(out_dir, "pit.png")
    with open(png_path, "wb") as f:
        f.write(png)

    parts = [f"<h1>{html.escape(title)}</h1>"]
    if decision is not None:
        verdict = "PASSED" if decision.passed else "REJECTED"
        cls = "pass" if decision.passed else "fail"
        parts.append(f'<h2>Gate decision: <span class="{cls}">{verdict}</span></h2>')
        parts.append("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in decision.reasons)
                     + "</ul>")
        parts.append("<h3>Gate statistics</h3>" + _table(decision.stats))
    else:
        parts.append("<h2>No gate decision (evaluation only)</h2>")
    scalars = {k: v for k, v in calib.items() if not isinstance(v, (list, dict))}
    parts.append("<h3>Calibration</h3>" + _table(scalars))
    alt = "reliability diagram" if calib.get("kind") == "binary" else "PIT histogram"
    b64 = base64.b64encode(png).decode("ascii")
    parts.append(f'<img alt="{alt}" src="data:image/png;base64,{b64}">')
    if calib.get("reliability"):
        parts.append("<h3>Reliability table</h3><table><tr><th>bin</th><th>mean predicted</th>"
                     "<th>observed</th><th>rows</th></tr>" + "".join(
                         f"<tr><td>[{r['lo']:.1f}, {r['hi']:.1f})</td><td>{r['mean_pred']:.4f}"
                         f"</td><td>{r['obs_freq']:.4f}</td><td>{r['count']}</td></tr>"
                         for r in calib["reliability"]) + "</table>")
    if calib.get("pit_hist"):
        parts.append("<p>PIT histogram counts: "
                     + html.escape(", ".join(str(c) for c in calib["pit_hist"])) + "</p>")
    doc = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
           + "\n".join(parts) + "</body></html>\n")
    html_path = os.path.join(out_dir, "report.html")
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(doc)
    return {"pit_png": png_path, "report_html": html_path}


__all__ = ["write_report"]
