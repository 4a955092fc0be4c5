"""The rollout state machine, driven tick by tick against a scripted backend (Flagger-style).

The backend is deterministic in its cursor, so a controller that is replaced mid-rollout must
reach exactly the decision of one that was not. Real processes: tests/test_rollout_local.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.registry import Registry

from mleops.errors import DataError
from mleops.rollout import (
    FAILED,
    PROGRESSING,
    PROMOTED,
    ROLLED_BACK,
    WAITING,
    Controller,
    FileStateStore,
    Guardrails,
    Observation,
    RolloutError,
    RolloutState,
    SequentialTest,
    TestConfig,
    parse_steps,
)

FAST = Guardrails(step_min_rows=100, hold_after_s=5, metrics_timeout_s=20)


class Backend:
    """Rows per tick drawn from a generator seeded by the cursor (deterministic on resume)."""

    def __init__(self, drop=0.0, sd=0.5, batch=(20, 60), silent=False, arms=None,
                 fail_deploy=None):
        self.drop, self.sd, self.batch, self.silent = drop, sd, batch, silent
        self.arms, self.fail_deploy = arms or {}, fail_deploy
        self.calls = []

    def describe(self):
        return {"kind": "fake"}

    def deploy_canary(self, state):
        self.calls.append(("deploy", state.candidate_version))
        if self.fail_deploy:
            raise RolloutError(self.fail_deploy)
        state.cursor = {"tick": 0}

    def set_weight(self, state):
        self.calls.append(("weight", state.weight))

    def rollback(self, state):
        self.calls.append(("rollback", state.weight))

    def promote(self, state):
        self.calls.append(("promote", state.candidate_version))

    def read(self, state):
        t = state.cursor["tick"]
        state.cursor["tick"] = t + 1
        if self.silent:
            return Observation(np.zeros(0), np.zeros(0), arms=self.arms)
        rng = np.random.default_rng(1000 + t)
        n_c, n_p = self.batch
        return Observation(rng.normal(-1.0 - self.drop, self.sd, n_c),
                           rng.normal(-1.0, self.sd, n_p), arms=self.arms)


class Clock:
    def __init__(self):
        self.t = 1_000.0

    def __call__(self):
        return self.t


def _run(controller, name, clock=None, ticks=2000):
    for _ in range(ticks):
        state = controller.tick(name)
        if clock:
            clock.t += 1.0
        if state.terminal or state.phase == WAITING:
            return state
    raise AssertionError(f"no decision after {ticks} ticks: {state.reason}")


def _start(tmp_path, backend, registry=None, candidate="2", **kw):
    registry = registry or Registry()
    clock = Clock()
    c = Controller(FileStateStore(str(tmp_path)), backend, registry, clock=clock)
    kw.setdefault("steps", "10,50,100")
    kw.setdefault("guardrails", FAST)
    kw.setdefault("test", TestConfig(min_drop=0.1))
    return c, c.start("m", candidate, **kw), registry, clock


def test_good_canary_walks_the_steps_and_is_promoted(tmp_path):
    backend = Backend(drop=0.0)
    c, state, reg, clock = _start(tmp_path, backend)
    assert state.phase == PROGRESSING and state.weight == 10
    state = _run(c, "m", clock)
    assert state.phase == PROMOTED, state.reason
    assert reg.promoted == [("m", "2")] and reg.tags["2"]["mleops.rollout"] == "promoted"
    weights = [w for op, w in backend.calls if op == "weight"]
    assert weights == [10, 50, 100]
    assert ("promote", "2") in backend.calls
    assert [e["event"] for e in state.history] == ["started", "step", "step", "promoting",
                                                   "promoted"]
    assert state.verdict["decision"] == "not_worse"


def test_worse_canary_is_rolled_back_and_tagged(tmp_path):
    backend = Backend(drop=0.3)
    c, _, reg, clock = _start(tmp_path, backend)
    state = _run(c, "m", clock)
    assert state.phase == ROLLED_BACK and state.weight == 0
    assert "log-likelihood dropped" in state.reason
    assert reg.promoted == []
    tag = reg.tags["2"]
    assert tag["mleops.rollout"] == "rolled_back"
    assert tag["mleops.rollout_stats"]["verdict"]["mean_diff"] < -0.1
    assert backend.calls[-1] == ("rollback", 0)
    assert reg.dropped == [("challenger", "2")]
    assert c.tick("m").phase == ROLLED_BACK  # terminal: a tick changes nothing
    assert backend.calls[-1] == ("rollback", 0)


def test_restarted_controller_reaches_the_same_decision(tmp_path):
    c, _, _, clock = _start(tmp_path / "a", Backend(drop=0.15))
    whole = _run(c, "m", clock)
    c, _, _, clock = _start(tmp_path / "b", Backend(drop=0.15))
    for _ in range(5):
        killed = c.tick("m")
    backend = Backend(drop=0.15)
    again = Controller(FileStateStore(str(tmp_path / "b")), backend, Registry(), clock=clock)
    resumed = _run(again, "m", clock)
    assert backend.calls[0] == ("weight", killed.weight)  # the new controller re-asserts traffic first
    assert resumed.phase == whole.phase
    assert resumed.verdict == whole.verdict
    assert resumed.cursor["tick"] == whole.cursor["tick"]


def test_confirmation_then_abort_rolls_back(tmp_path):
    c, _, reg, clock = _start(tmp_path, Backend(), confirm_before_promote=True)
    state = _run(c, "m", clock)
    assert state.phase == WAITING and reg.promoted == []
    assert c.tick("m").phase == WAITING  # stays until confirmed
    state = c.abort("m", "operator said no")
    assert state.phase == ROLLED_BACK and "operator said no" in state.reason
    assert reg.tags["2"]["mleops.rollout"] == "rolled_back"


def test_confirmation_then_confirm_promotes(tmp_path):
    c, _, reg, clock = _start(tmp_path, Backend(), confirm_before_promote=True)
    _run(c, "m", clock)
    c.confirm("m")
    assert c.tick("m").phase == PROMOTED and reg.promoted == [("m", "2")]


def test_candidate_change_restarts_from_zero_traffic(tmp_path):
    backend = Backend()
    c, _, _, clock = _start(tmp_path, backend)
    for _ in range(8):
        c.tick("m")
    assert c.status("m").verdict["rows_canary"] > 0
    state = c.start("m", "3", steps="10,50,100", guardrails=FAST, supersede=True)
    assert state.candidate_version == "3" and state.weight == 10 and state.step_index == 0
    assert state.verdict == {} and state.test == SequentialTest(TestConfig()).to_dict()
    i = backend.calls.index(("deploy", "3"))
    assert ("rollback", 0) in backend.calls[:i]  # old canary out before the new one goes in
    assert any(e["event"] == "candidate_changed" for e in state.history)
    assert c.start("m", "3", supersede=True).rollout_id == state.rollout_id  # resumed


def test_silent_metrics_hold_then_roll_back(tmp_path):
    c, _, _, clock = _start(tmp_path, Backend(silent=True))
    clock.t += 6
    state = c.tick("m")
    assert state.phase == PROGRESSING and state.reason.startswith("holding")
    clock.t += 15
    state = c.tick("m")
    assert state.phase == ROLLED_BACK and "no canary metrics" in state.reason


@pytest.mark.parametrize("arms, words", [
    ({"canary": {"requests": 50, "errors": 10}}, "error rate"),
    ({"canary": {"requests": 50, "outside_support_rate": 0.2},
      "champion": {"requests": 400, "outside_support_rate": 0.0}}, "outside its support"),
    ({"canary": {"requests": 50, "p99_ms": 5000.0}}, "p99 latency"),
])
def test_guardrails_roll_back(tmp_path, arms, words):
    c, _, _, clock = _start(tmp_path, Backend(arms=arms))
    state = c.tick("m")
    assert state.phase == ROLLED_BACK and words in state.reason


def test_missing_candidate_is_refused_before_traffic_moves(tmp_path):
    backend = Backend()
    c = Controller(FileStateStore(str(tmp_path)), backend, Registry())
    with pytest.raises(DataError, match="no version 9"):
        c.start("m", "9")
    with pytest.raises(DataError, match="already the champion"):
        c.start("m", "1")
    assert backend.calls == [] and FileStateStore(str(tmp_path)).load("m") is None


def test_candidate_that_fails_to_load_is_refused(tmp_path):
    backend = Backend(fail_deploy="model server exited with status 1")
    c = Controller(FileStateStore(str(tmp_path)), backend, Registry())
    with pytest.raises(RolloutError, match="refused before any traffic moved"):
        c.start("m", "2")
    assert backend.calls == [("deploy", "2")]  # never a weight
    state = c.status("m")
    assert state.phase == FAILED and state.weight == 0


def test_state_file_round_trip(tmp_path):
    store = FileStateStore(str(tmp_path))
    s = RolloutState(name="m", candidate_version="2", champion_version="1")
    s.event("started")
    store.save(s)
    assert store.load("m") == s
    (tmp_path / "m.json").write_text("{broken")
    with pytest.raises(DataError, match="unreadable"):
        store.load("m")
    with pytest.raises(DataError, match="invalid rollout name"):
        store.load("../etc/passwd")


@pytest.mark.parametrize("steps", ["", "10,5", "0,50", "10,101", "a,b", "50,50"])
def test_bad_steps(steps):
    with pytest.raises(DataError):
        parse_steps(steps)


def test_bad_guardrails():
    with pytest.raises(DataError, match="max_error_rate"):
        Guardrails(max_error_rate=-1)
    with pytest.raises(DataError, match="below 1"):
        Guardrails(max_error_rate=1.5)


def test_unreadable_metrics_hold_then_roll_back(tmp_path):
    backend = Backend()
    c, _, _, clock = _start(tmp_path, backend)

    def down(state):
        raise RolloutError("router at http://127.0.0.1:1 unreachable")
    backend.read = down
    state = c.tick("m")
    assert state.phase == PROGRESSING and "cannot read metrics" in state.reason
    clock.t += 25
    state = c.tick("m")
    assert state.phase == ROLLED_BACK and "unreachable" in state.reason


def test_registry_failure_at_promotion_is_retried(tmp_path):
    from mleops.registry import RegistryError

    reg = Registry()
    real = reg.promote
    calls = []

    def flaky(name, version, force=False):
        calls.append(version)
        if len(calls) == 1:
            raise RegistryError("tracking server unreachable")
        real(name, version)
    reg.promote = flaky
    backend = Backend()
    c, _, _, clock = _start(tmp_path, backend, registry=reg)
    state = _run(c, "m", clock)
    assert state.phase == PROMOTED and calls == ["2", "2"]
    assert any(e["event"] == "promotion_failed" for e in state.history)
    assert ("promote", "2") in backend.calls


def test_full_split_traffic_needs_evidence_first(tmp_path):
    """Step 50 -> 100 in split mode is promotion in effect: rows alone do not buy it."""
    c, _, _, clock = _start(tmp_path, Backend(), guardrails=Guardrails(step_min_rows=20))
    seen = []
    for _ in range(200):
        state = c.tick("m")
        clock.t += 1
        seen.append((state.weight, state.verdict.get("decision")))
        if state.weight == 100:
            break
    first_full = next(i for i, (w, _) in enumerate(seen) if w == 100)
    assert seen[first_full] == (100, "not_worse")  # advanced on the tick it had evidence
    assert any(w == 50 and d == "continue" for w, d in seen)  # it waited at 50%


def test_a_canary_that_calls_live_rows_impossible_is_rolled_back(tmp_path):
    backend = Backend()
    c, _, _, clock = _start(tmp_path, backend)
    real = backend.read

    def with_inf(state):
        obs = real(state)
        obs.canary_rows[3] = -np.inf
        return obs
    backend.read = with_inf
    state = c.tick("m")
    assert state.phase == ROLLED_BACK and "zero likelihood" in state.reason


def test_traffic_failures_hold_and_retry(tmp_path):
    backend = Backend()
    c, _, reg, clock = _start(tmp_path, backend, confirm_before_promote=True)
    state = _run(c, "m", clock)
    assert state.phase == WAITING
    c.confirm("m")

    def down(state):
        raise RolloutError("router at http://127.0.0.1:1 unreachable")
    backend.promote = down
    state = c.tick("m")  # registry moved, traffic did not: promoting, retried next tick
    assert state.phase == "promoting" and reg.promoted == [("m", "2")]
    assert "unreachable" in state.reason
    del backend.promote
    assert c.tick("m").phase == PROMOTED and ("promote", "2") in backend.calls


def test_failed_rollback_stays_pending_then_completes(tmp_path):
    backend = Backend()
    c, _, reg, clock = _start(tmp_path, backend)
    backend.rollback = lambda state: (_ for _ in ()).throw(RolloutError("API server down"))
    state = c.abort("m", "pager")
    assert state.phase == PROGRESSING and state.abort_requested == "pager"
    assert "rollback pending" in state.reason and state.weight == 10
    del backend.rollback
    state = c.tick("m")
    assert state.phase == ROLLED_BACK and state.weight == 0 and "pager" in state.reason
    assert reg.tags["2"]["mleops.rollout"] == "rolled_back"


def test_new_candidate_is_checked_before_the_running_one_is_touched(tmp_path):
    backend = Backend()
    c, _, reg, clock = _start(tmp_path, backend)
    with pytest.raises(DataError, match="no version 9"):
        c.start("m", "9", supersede=True)
    assert c.status("m").phase == PROGRESSING and ("rollback", 0) not in backend.calls
    c.start("m", "3", steps="10,50,100", guardrails=FAST, supersede=True)
    assert reg.tags["2"]["mleops.rollout"] == "superseded"


def test_same_candidate_on_a_new_backend_is_moved_there(tmp_path):
    c, first, _, clock = _start(tmp_path, Backend())
    for _ in range(3):
        c.tick("m")
    moved = Backend()
    moved.describe = lambda: {"kind": "fake", "router": "new"}
    c2 = Controller(FileStateStore(str(tmp_path)), moved, Registry(), clock=clock)
    state = c2.start("m", "2", steps="10,50,100", guardrails=FAST, supersede=True)
    assert moved.calls[:2] == [("deploy", "2"), ("weight", state.weight)]
    assert state.backend == {"kind": "fake", "router": "new"}
    assert state.verdict["rows_canary"] > 0  # evidence about the same two models is kept


def test_one_rollout_per_model(tmp_path):
    """A second start while one is in progress is refused, naming it, and changes nothing;
    a driver whose rollout was superseded does not report the new one's outcome."""
    backend = Backend()
    c, first, _, clock = _start(tmp_path, backend)
    for candidate in ("2", "3"):
        with pytest.raises(RolloutError, match=f"already has a rollout in progress \\(candidate "
                                               f"version 2, progressing, rollout id "
                                               f"{first.rollout_id}"):
            c.start("m", candidate)
    assert c.status("m").rollout_id == first.rollout_id and ("rollback", 0) not in backend.calls
    other = Controller(FileStateStore(str(tmp_path)), Backend(), Registry(), clock=clock)

    def supersede_midway(state):
        if state.history[-1]["event"] != "candidate_changed":
            other.start("m", "3", steps="10,50,100", guardrails=FAST, supersede=True)

    with pytest.raises(RolloutError, match=f"rollout {first.rollout_id} of 'm' was superseded"):
        c.run("m", interval=0.05, timeout=5, on_tick=supersede_midway)


class Killed(BaseException):
    """The process dies here: nothing after this line runs, nothing catches it."""


def test_a_rollback_killed_in_flight_finishes_on_resume(tmp_path):
    class DiesInRollback(Backend):
        def rollback(self, state):
            raise Killed

    c, _, reg, clock = _start(tmp_path, DiesInRollback(drop=1.0))
    with pytest.raises(Killed):
        for _ in range(200):
            c.tick("m")
    assert c.status("m").abort_requested  # the intent was saved before traffic moved

    class CanaryGone(Backend):  # the router already removed the canary before the kill
        def set_weight(self, state):
            raise RolloutError("router PUT /admin/routes: HTTP 400 no canary deployed")

    resumed = Controller(FileStateStore(str(tmp_path)), CanaryGone(), reg, clock=clock)
    state = resumed.tick("m")
    assert state.phase == ROLLED_BACK and state.weight == 0


@pytest.mark.parametrize("where", ["registry", "traffic"])
def test_a_promotion_killed_midway_completes_on_resume_and_refuses_abort(tmp_path, where):
    class DiesInPromote(Backend):
        def promote(self, state):
            raise Killed

    class DyingRegistry(Registry):
        def promote(self, name, version, alias="champion", force=False):
            raise Killed

    backend = DiesInPromote() if where == "traffic" else Backend()
    reg = Registry() if where == "traffic" else DyingRegistry()
    c, _, _, clock = _start(tmp_path, backend, registry=reg)
    with pytest.raises(Killed):
        _run(c, "m", clock)
    assert c.status("m").phase == "promoting"
    with pytest.raises(DataError, match="too late to abort"):
        c.request_abort("m")
    reg2, back2 = Registry(), Backend()
    resumed = Controller(FileStateStore(str(tmp_path)), back2, reg2, clock=clock)
    state = resumed.tick("m")
    assert state.phase == PROMOTED and reg2.promoted == [("m", "2")]
    assert back2.calls == [("promote", "2")]  # no weight re-asserted while promoting


def test_one_controller_drives_a_rollout_at_a_time(tmp_path):
    import subprocess
    import sys

    from mleops.rollout.state.lease import Driver

    c, _, reg, clock = _start(tmp_path, Backend())
    c.driver = Driver(1.0)
    c.tick("m")
    second = Controller(FileStateStore(str(tmp_path)), Backend(), reg, clock=clock)
    second.driver = Driver(1.0)
    with pytest.raises(RolloutError, match=r"driven by another controller \(pid \d+ on .*\) "
                                           r"for 30 s more"):
        second.tick("m")
    clock.t += 31  # the first stopped ticking: its lease ran out
    assert second.tick("m").driver["id"] == second.driver.id
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    state = c.store.load("m")  # as if the holder were a controller on this host, now killed
    state.driver = {**state.driver, "pid": int(dead)}
    c.store.save(state)
    fourth = Controller(FileStateStore(str(tmp_path)), Backend(), reg, clock=clock)
    fourth.driver = Driver(1.0)
    assert fourth.tick("m").driver["id"] == fourth.driver.id  # a dead holder is replaced at once
