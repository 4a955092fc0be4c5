"""The demo's live part: a rollout through the local data plane while traffic is replayed,
and the per-version live log-likelihood series the canary plot shows."""

from __future__ import annotations

from typing import Any

import numpy as np

from mleops.demo.progress import Progress
from mleops.rollout import Controller, FileStateStore, Guardrails, Summary, TestConfig
from mleops.rollout.backends.local import LocalDataPlane, Replayer, load_rows


def run_rollout(plane: LocalDataPlane, registry, name: str, candidate: str, *, mode: str,
                live_path: str, state_dir: str, rate: float = 40.0,
                steps: str = "10,25,50,100", min_drop: float = 0.05,
                timeout: float = 240.0) -> dict[str, Any]:
    """Canary ``candidate`` with live rows replayed at ``rate`` requests/s; what happened."""
    rows, names = load_rows(live_path)
    seq0 = plane.router.next_seq
    controller = Controller(FileStateStore(state_dir), plane.backend(), registry)
    # the demo's story is the likelihood's decision; on a loaded 2-core box (CI runs it beside
    # the test suite) a model server's p99 can pass the production default of 1 s
    g = Guardrails(step_min_rows=400, max_p99_ms=5000.0)
    test = TestConfig(min_drop=min_drop)  # the controller sets the pairing from the mode
    label = f"canary v{candidate} ({mode})"
    with Replayer(plane.url, rows, names, rate=rate, batch=20, wire=plane.wire) as client, \
            Progress(label) as bar:
        controller.start(name, candidate, steps=steps, mode=mode, test=test, guardrails=g)

        def show(state) -> None:
            v = state.verdict or {}
            done = (state.step_index + min(state.step_rows / g.step_min_rows, 1.0)) / len(
                state.steps)
            diff = v.get("mean_diff")
            bar.update(done, f"traffic {state.weight}%  canary rows {v.get('rows_canary', 0)}"
                             + (f"  diff {diff:+.3f} nats/row" if diff is not None else ""))
        state = controller.run(name, interval=0.5, timeout=timeout, on_tick=show)
    records = plane.router.read(seq0, limit=10**7)["records"]
    return {"state": state, "sent": client.sent, "failed": client.failed,
            "failures": client.failures, "series": live_series(records, state)}


def live_series(records: list[dict], state) -> dict[str, Any]:
    """Cumulative mean log-likelihood of each arm with a 95% band, by seconds since start;
    the rollout's events at their times."""
    t0 = state.started_at
    arms: dict[str, list[tuple[float, np.ndarray]]] = {"champion": [], "canary": []}
    for r in records:
        paired = r.get("paired", False)
        for arm in arms:
            version = r.get(f"{arm}_version")
            if arm in r and (state.mode == "split" or paired) and version == (
                    state.candidate_version if arm == "canary" else state.champion_version):
                arms[arm].append((r["t"] - t0, np.asarray(r[arm], float)))
    out: dict[str, Any] = {}
    for arm, chunks in arms.items():
        points, acc = [], Summary()
        every = max(1, len(chunks) // 60)
        for i, (t, ll) in enumerate(chunks):
            acc = acc + Summary.of(ll)
            if acc.n > 30 and (i % every == 0 or i == len(chunks) - 1):
                half = 1.96 * np.sqrt(acc.var / acc.n)
                points.append((t, acc.mean, acc.mean - half, acc.mean + half))
        out[arm] = points
    label = {"promoted": "promoted", "rolled_back": "rollback"}
    out["events"] = [(e["time"] - t0, f"step {e['weight']}%" if e["event"] == "step"
                      else label[e["event"]]) for e in state.history
                     if e["event"] in ("step", "promoted", "rolled_back")]
    return out


__all__ = ["LocalDataPlane", "live_series", "run_rollout"]
