"""``evaluate_stream``: the controller's decision code on recorded rows (what the benchmark
uses), its inputs and its answers."""

from __future__ import annotations

import numpy as np
import pytest

from mleops.errors import DataError
from mleops.rollout import evaluate_stream


def stream(rng, mode="split", drop=0.0, ticks=300, per_tick=200, share=0.1, drift=0.0,
           rows_per_request=1):
    """Requests over ``ticks`` seconds; ``loglik`` by the serving arm (shadow: both scores)."""
    n_req = ticks * per_tick
    t = np.repeat(np.arange(ticks), per_tick) + rng.random(n_req) * 0.999
    t.sort()
    canary_req = rng.random(n_req) < share
    m = rows_per_request
    time_, req, canary = np.repeat(t, m), np.repeat(np.arange(n_req), m), np.repeat(canary_req, m)
    level = -1.0 + drift * time_ / ticks
    if mode == "shadow":
        champ = level + rng.normal(0, 0.8, time_.size)
        cand = champ - drop + rng.normal(0, 0.25, time_.size)
        return {"time": time_, "request": req, "arm": np.where(canary, "canary", "champion"),
                "loglik": np.where(canary, cand, champ), "loglik_champion": champ}
    ll = level + rng.normal(0, 0.7, time_.size) - np.where(canary, drop, 0.0)
    return {"time": time_, "request": req, "arm": np.where(canary, "canary", "champion"),
            "loglik": ll}


@pytest.mark.parametrize("mode", ["split", "shadow"])
def test_a_worse_canary_is_rolled_back_and_an_equal_one_promoted(rng, mode):
    share = 0.5 if mode == "shadow" else 0.1
    bad = evaluate_stream(stream(rng, mode, drop=0.3, share=share), {"mode": mode})
    assert bad["decision"] == "rollback" and bad["phase"] == "rolled_back"
    assert "dropped" in bad["reason"] and bad["canary_rows"] > 0 and bad["time"] > 0
    good = evaluate_stream(stream(rng, mode, share=share), {"mode": mode,
                                                            "step_min_rows": 300})
    assert good["decision"] == "promote" and good["phase"] == "promoted"
    assert good["canary_rows"] >= 3 * 300  # every step's rows before the last one


@pytest.mark.parametrize("mode", ["split", "shadow"])
def test_the_kubernetes_sums_path_decides_too_and_a_shared_drift_cancels(rng, mode):
    """``source="sums"``: per-tick count/sum/sum of squares per version, as the Kubernetes
    backend reads them from Prometheus (shadow unpaired: the champion's sums cover every row
    it served). A drift everyone shares does not roll back; a clear drop does."""
    share = 0.5 if mode == "shadow" else 0.1
    cfg = {"mode": mode, "source": "sums", "step_min_rows": 10**6}
    bad = evaluate_stream(stream(rng, mode, drop=0.3, share=share), cfg)
    assert bad["decision"] == "rollback", bad["reason"]
    drifting = [evaluate_stream(stream(rng, mode, share=share, drift=0.4, ticks=200), cfg)
                for _ in range(5)]
    assert all(o["decision"] == "continue" for o in drifting), [o["reason"] for o in drifting]


def test_rows_that_run_out_leave_the_decision_open(rng):
    out = evaluate_stream(stream(rng, ticks=3), {"mode": "split"})
    assert out["decision"] == "continue" and out["ticks"] == 3


def test_a_shared_drift_during_the_ramp_does_not_roll_back(rng):
    rolled = sum(evaluate_stream(stream(rng, drift=0.4, ticks=200), {"mode": "split",
                                                                      "step_min_rows": 10**6}
                                 )["decision"] == "rollback" for _ in range(10))
    assert rolled == 0


def test_a_dataframe_and_the_testconfig_keys_work(rng):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(stream(rng, drop=0.3))
    out = evaluate_stream(df, {"mode": "split", "min_drop": 0.1, "alpha": 0.05, "beta": 0.1,
                               "tick_seconds": 2.0})
    assert out["decision"] == "rollback" and out["verdict"]["rows_canary"] == out["canary_rows"]


@pytest.mark.parametrize("rows, config, message", [
    ({"time": [0.0]}, None, "needs columns"),
    ({"time": [1.0, 0.5], "request": [0, 1], "arm": ["canary", "champion"],
      "loglik": [-1.0, -1.0]}, None, "non-decreasing"),
    ({"time": [0.0, 1.0], "request": [0, 1], "arm": ["canary", "primary"],
      "loglik": [-1.0, -1.0]}, None, "arm must be"),
    ({"time": [0.0, 1.0], "request": [0, 1], "arm": ["canary", "champion"],
      "loglik": [-1.0, -1.0]}, {"mode": "shadow"}, "loglik_champion"),
    ({"time": [0.0], "request": [0], "arm": ["canary"], "loglik": [-1.0]},
     {"mode": "split", "tick": 1}, "unknown config keys"),
    ({"time": [0.0], "request": [0], "arm": ["canary"], "loglik": [-1.0]},
     {"mode": "blue-green"}, "mode must be"),
    ({"time": [0.0], "request": [0], "arm": ["canary"], "loglik": [-1.0]},
     {"tick_seconds": 0}, "tick_seconds"),
    ({"time": [0.0], "request": [0], "arm": ["canary"], "loglik": [-1.0]},
     {"source": "prometheus"}, "source must be"),
])
def test_bad_input_is_a_data_error(rows, config, message):
    with pytest.raises(DataError, match=message):
        evaluate_stream(rows, config)
