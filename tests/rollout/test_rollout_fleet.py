"""A fleet rollout's per-key e-processes with e-BH across keys at every tick: the worse keys
are rolled back and the rest are not, the state resumes to the same decisions, shadow mode
pairs rows, and bad input is refused by name."""

import numpy as np
import pytest

from mleops.errors import DataError
from mleops.gate import e_bh
from mleops.rollout import evaluate_fleet_stream
from mleops.rollout.kernels.fleet import FleetConfig, FleetEvidence, e_bh_mask

K, WORSE = 60, [f"k{i}" for i in range(6)]


def traffic(seed: int, ticks: int = 60, per_tick: int = 300, shadow: bool = False,
            worse_by: float = 0.4) -> dict:
    """Requests (1-3 rows sharing a request effect) over K keys of Zipf popularity, a drift
    both arms share, canary share ramping 10% -> 50%; the WORSE keys lose ``worse_by``."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, K + 1) ** 1.1
    cols = {c: [] for c in ("time", "request", "arm", "loglik", "key", "loglik_champion")}
    req = 0
    bad = np.isin(np.arange(K), [int(k[1:]) for k in WORSE])
    for t in range(ticks):
        keys = rng.choice(K, per_tick, p=p / p.sum())
        size = rng.integers(1, 4, per_tick)
        canary = rng.uniform(size=per_tick) < (0.1 if t < ticks // 3 else 0.5)
        k = np.repeat(keys, size)
        effect = np.repeat(rng.normal(0, 0.3, per_tick), size)  # rows of a request correlate
        base = -1.0 + effect + rng.normal(0, 1, k.size) - 0.3 * t / ticks  # shared drift
        on_canary = np.repeat(canary, size)
        cand = base - worse_by * bad[k] + rng.normal(0, 0.05, k.size)
        cols["loglik"].append(np.where(on_canary, cand, base) if not shadow else cand)
        cols["loglik_champion"].append(base)
        cols["arm"].append(np.where(on_canary | shadow, "canary", "champion"))
        cols["time"].append(np.full(k.size, t + 0.5))
        cols["request"].append(np.repeat(np.arange(req, req + per_tick), size))
        cols["key"].append(np.char.add("k", k.astype(str)))
        req += per_tick
    return {c: np.concatenate(v) for c, v in cols.items()}


def test_the_worse_keys_are_rolled_back_and_no_other():
    out = evaluate_fleet_stream(traffic(1), {"min_drop": 0.1, "fdr": 0.05})
    back = sorted(k for k, v in out["keys"].items() if v["decision"] == "rollback")
    assert set(back) <= set(WORSE) and len(back) >= 4, back  # the busy worse keys, no other
    for k in back:
        d = out["keys"][k]
        assert d["e_rollback"] >= 1 / 0.05 and d["tick"] >= 3 and d["rows_canary"] >= 100
    assert out["counts"]["rollback"] == len(back)
    assert out["state_bytes"] < 15 * 8 * K + 1  # O(keys) numbers, never rows


def test_an_equally_good_canary_rolls_back_nothing_and_promotes_busy_keys():
    out = evaluate_fleet_stream(traffic(2, ticks=120, worse_by=0.0),
                                {"min_drop": 0.2, "fdr": 0.05})
    assert out["counts"]["rollback"] == 0, out["counts"]
    promoted = [k for k, v in out["keys"].items() if v["decision"] == "promote"]
    assert "k0" in promoted and "k1" in promoted, out["counts"]  # the busiest keys


def test_shadow_mode_pairs_the_rows():
    out = evaluate_fleet_stream(traffic(3, ticks=30, shadow=True),
                                {"mode": "shadow", "min_drop": 0.1})
    back = sorted(k for k, v in out["keys"].items() if v["decision"] == "rollback")
    assert set(back) <= set(WORSE) and len(back) >= 5, back


def test_a_resumed_state_reaches_the_same_decisions_and_rollbacks_never_undo():
    rows = traffic(4, ticks=40)
    keys, code = np.unique(rows["key"], return_inverse=True)
    _, request = np.unique(rows["request"], return_inverse=True)
    cfg = FleetConfig(min_drop=0.1)
    one, two = FleetEvidence(keys.size, cfg), None
    seen: set[int] = set()
    for t in range(40):
        s = rows["time"] == t + 0.5
        args = (code[s], request[s], rows["arm"][s] == "canary", rows["loglik"][s])
        one.tick(*args)
        back = set(np.flatnonzero(one.a["decision"] == 1).tolist())
        assert seen <= back
        seen = back
        if t == 19:  # the controller is killed here; a new one resumes from its state
            two = FleetEvidence.from_dict(one.to_dict())
        elif two is not None:
            two.tick(*args)
    for f in ("decision", "tick", "score", "info"):
        np.testing.assert_array_equal(one.a[f], two.a[f])


def test_e_bh_in_log_space_equals_e_bh():
    e = np.array([400.0, 30.0, 1.0, 90.0, 0.2, 2500.0])
    np.testing.assert_array_equal(e_bh_mask(np.log(e), 0.1), e_bh(e, 0.1))


@pytest.mark.parametrize("cfg,rows_patch,match", [
    ({"fdr": 1.5}, {}, "fdr must be in"),
    ({"nope": 1}, {}, "unknown fleet rollout config"),
    ({}, {"arm": "left"}, "arm must be"),
    ({}, {"loglik": np.nan}, "non-finite"),
    ({"mode": "shadow"}, {"drop": "loglik_champion"}, "lack column"),
])
def test_bad_input_is_refused_by_name(cfg, rows_patch, match):
    rows = traffic(5, ticks=3)
    for c, v in rows_patch.items():
        if c == "drop":
            rows.pop(v)
        else:
            rows[c] = rows[c].astype(object)
            rows[c][0] = v
    with pytest.raises(DataError, match=match):
        evaluate_fleet_stream(rows, cfg)
