"""The demo's HTML report: what happened, in order, with the plots."""

from __future__ import annotations

import html
import os
from typing import Any


def write_report(path: str, *, steps: list[dict[str, Any]], versions: list[dict[str, Any]],
                 images: dict[str, str]) -> str:
    """``steps``: [{"title", "lines": [...]}]; ``images``: caption -> PNG path."""
    root = os.path.dirname(os.path.abspath(path))
    parts = ["<!doctype html><meta charset=utf-8><title>mleops demo</title>",
             "<style>body{font:15px system-ui,sans-serif;max-width:980px;margin:2em auto;"
             "color:#222}h2{margin-top:1.6em}img{max-width:100%;border:1px solid #ddd}"
             "table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid "
             "#ddd;text-align:left}code{background:#f4f4f4}</style>",
             "<h1>mleops demo: from telemetry to a rolled-back canary</h1>"]
    for step in steps:
        parts.append(f"<h2>{html.escape(step['title'])}</h2><ul>")
        parts += [f"<li>{html.escape(line)}</li>" for line in step["lines"]]
        parts.append("</ul>")
    parts.append("<h2>Registry</h2><table><tr><th>version</th><th>aliases</th>"
                 "<th>rollout</th><th>reason</th></tr>")
    for v in versions:
        tags = v.get("tags", {})
        parts.append(f"<tr><td>v{v['version']}</td><td>{', '.join(v['aliases'])}</td>"
                     f"<td>{html.escape(tags.get('mleops.rollout', ''))}</td>"
                     f"<td>{html.escape(tags.get('mleops.rollout_reason', '')[:160])}</td></tr>")
    parts.append("</table>")
    for caption, png in images.items():
        rel = os.path.relpath(png, root)
        parts.append(f"<h2>{html.escape(caption)}</h2><img src='{html.escape(rel)}' "
                     f"alt='{html.escape(caption)}'>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    return path


__all__ = ["write_report"]
