"""The canary controller: one persisted state machine per rollout, one step per tick.

``progressing -> promoted | rolled_back`` (``waiting_confirmation`` in between when promotion
needs a person; ``failed`` when the candidate is refused before any traffic moves). Every tick
re-reads the state, reads what the backend observed since the state's cursor, updates the
sequential test (:mod:`mleops.rollout.kernels.statistics`), checks the guardrails and takes at most
one step, then writes the state back (Flagger's pattern): a killed controller resumes where
it was. Rollback is reachable from every non-terminal state, by the test, a guardrail, a
metrics timeout or an abort request. Promotion needs evidence: every step's minimum rows and
the test's ``not_worse`` decision; if metrics stop arriving, the rollout holds, then rolls
back after ``metrics_timeout_s``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from mleops import failpoints
from mleops.errors import DataError, MleopsError
from mleops.rollout.backends.base import MODES, Backend, RolloutError
from mleops.rollout.kernels.config import TestConfig
from mleops.rollout.kernels.decision import (
    CONTINUE,
    PROMOTE,
    ROLLBACK,
    Counters,
    Decision,
    conclude,
    settle,
    unreadable,
    weigh,
)
from mleops.rollout.kernels.guardrails import Guardrails
from mleops.rollout.kernels.statistics import SequentialTest
from mleops.rollout.state.lease import Driver
from mleops.rollout.state.store import (
    FAILED,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
    WAITING,
    RolloutState,
    StateStore,
    check_name,
)


def parse_steps(steps: str | list[int]) -> list[int]:
    """``"10,25,50,100"`` -> [10, 25, 50, 100]: strictly increasing percentages in 1..100."""
    try:
        out = [int(s) for s in (steps.split(",") if isinstance(steps, str) else steps)]
    except (TypeError, ValueError):
        raise DataError(f"steps must be comma-separated integers, got {steps!r}") from None
    if not out or any(not 0 < s <= 100 for s in out) or any(a >= b for a, b in
                                                              zip(out, out[1:])):
        raise DataError(f"steps must be strictly increasing percentages in 1..100, got {out}")
    return out


class Controller:
    """Drives rollouts kept in ``store`` through ``backend``; ``registry`` is a
    :class:`mleops.registry.Registry` (or anything with load_alias/load_version/promote/
    tag_version)."""

    def __init__(self, store: StateStore, backend: Backend, registry, *,
                 clock: Callable[[], float] = time.time):
        self.store, self.backend, self.registry, self.clock = store, backend, registry, clock
        self._reconciled: set[str] = set()
        self.driver: Driver | None = None  # set while run() drives: the lease it holds

    # --- commands ------------------------------------------------------------------------
    def start(self, name: str, candidate_version: str | int, *, steps="10,25,50,100",
              mode: str = "split", test: TestConfig | None = None,
              guardrails: Guardrails | None = None,
              confirm_before_promote: bool = False, supersede: bool = False) -> RolloutState:
        """Begin a rollout; refuses a candidate that does not exist or does not load before
        any traffic moves. One rollout per model: while one is in progress another start is
        refused (naming it) unless ``supersede``, which rolls the running one back first (a
        new candidate's analysis starts from zero traffic; the same candidate's resumes)."""
        check_name(name)
        candidate, steps = str(candidate_version), parse_steps(steps)
        if mode not in MODES:
            raise DataError(f"mode must be one of {list(MODES)}, got {mode!r}")
        # the mode decides the pairing: shadow scores the same rows, split different ones
        # (a sums-only backend, e.g. Prometheus, cannot pair rows: its shadow is unpaired)
        paired = mode == "shadow" and getattr(self.backend, "pairs_rows", True)
        test = dataclasses.replace(test or TestConfig(),
                                   mode="paired" if paired else "unpaired")
        guardrails = guardrails or Guardrails()
        with self.store.locked(name):
            current = self.store.load(name)
            running = current is not None and not current.terminal
            if running and not supersede:
                raise RolloutError(
                    f"model {name!r} already has a rollout in progress (candidate version "
                    f"{current.candidate_version}, {current.phase}, rollout id "
                    f"{current.rollout_id}): `mleops rollout resume {name}` drives it, "
                    "--supersede replaces it")
            if running and current.candidate_version == candidate:
                if current.backend != self.backend.describe():
                    self._move(current)  # e.g. a new local data plane after a restart
                    self.store.save(current)
                return current  # already running: resume, change nothing else
            champion, load_error = self._check_candidate(name, candidate)
            if running:  # a different candidate: old evidence says nothing about it
                reason = (f"candidate changed from {current.candidate_version} to "
                          f"{candidate}: analysis restarts at zero traffic")
                self._rollback(current, reason, outcome="superseded")
                current.event("candidate_changed", frm=current.candidate_version, to=candidate)
                self.store.save(current)
            state = RolloutState(name=name, candidate_version=candidate,
                                 champion_version=champion, mode=mode, steps=steps,
                                 confirm_before_promote=confirm_before_promote,
                                 test_config=test.to_dict(), guardrails=guardrails.to_dict(),
                                 started_at=self.clock(), last_data_at=self.clock())
            state.backend = self.backend.describe()
            if running:
                state.history = current.history[-50:]
            state.test = SequentialTest(test).to_dict()
            try:
                if load_error is not None:
                    raise load_error
                self.backend.deploy_canary(state)
            except Exception as e:
                state.phase, state.reason = FAILED, (f"candidate version {candidate} refused "
                                                     f"before any traffic moved: {e}")
                state.event("refused", error=str(e))
                self.store.save(state)
                raise RolloutError(state.reason) from e
            state.weight = steps[0]
            state.event("started", candidate=candidate, champion=champion, mode=mode)
            self.store.save(state)
            self.backend.set_weight(state)
            self._reconciled.add(name)
            return state

    def _check_candidate(self, name: str, candidate: str) -> tuple[str, MleopsError | None]:
        """(champion version, load error or None); DataError when it cannot be a candidate."""
        found = self.registry.champion(name)
        if found is None:
            raise DataError(f"model {name!r} has no champion to compare a canary with")
        champion = str(found[0])
        if champion == candidate:
            raise DataError(f"version {candidate} is already the champion of {name!r}")
        try:  # the artifact must load here too: a model the servers cannot read is refused
            found = self.registry.load_version(name, candidate)
        except MleopsError as e:
            return champion, e
        if found is None:
            raise DataError(f"model {name!r} has no version {candidate}: refused, no traffic "
                            "moved")
        return champion, None

    def _move(self, state: RolloutState) -> None:
        """Carry a running rollout onto this controller's backend (canary redeployed, read
        cursor reset; the evidence so far is about the same two models, so it stays)."""
        state.event("backend_changed", frm=state.backend, to=self.backend.describe())
        state.backend = self.backend.describe()
        self.backend.deploy_canary(state)
        self.backend.set_weight(state)
        self._reconciled.add(state.name)

    def abort(self, name: str, reason: str = "aborted by user") -> RolloutState:
        """Roll back now, from any non-terminal state but ``promoting`` (a running controller
        sees it). Once the registry has been told to promote, the promotion is completed
        (registry and traffic end on the candidate); `mleops models rollback` undoes it."""
        with self.store.locked(name):
            state = self._load(name)
            if state.phase == PROMOTING:
                raise DataError(f"rollout {name!r} is promoting version "
                                f"{state.candidate_version}: too late to abort; it completes "
                                "at the next tick, then `mleops models rollback` undoes it")
            if not state.terminal:
                self._rollback(state, reason)
                self.store.save(state)
            return state

    def request_abort(self, name: str, reason: str = "aborted by user"
                      ) -> tuple[RolloutState, str]:
        """Roll back now; when the backend or registry cannot be reached, record the request
        for the running controller's next tick instead. The state, and a warning ("" when the
        rollback is done)."""
        try:
            return self.abort(name, reason), ""
        except DataError:
            raise
        except MleopsError as e:
            with self.store.locked(name):
                state = self._load(name)
                state.abort_requested = reason
                self.store.save(state)
            return state, f"{e}; abort recorded for the controller's next tick"

    def confirm(self, name: str) -> RolloutState:
        """Allow a rollout waiting for confirmation to promote (at its next tick)."""
        with self.store.locked(name):
            state = self._load(name)
            if state.terminal:
                raise DataError(f"rollout {name!r} already ended: {state.phase}")
            state.confirmed = True
            state.event("confirmed")
            self.store.save(state)
            return state

    def status(self, name: str) -> RolloutState:
        return self._load(name)

    # --- the loop --------------------------------------------------------------------------
    def tick(self, name: str) -> RolloutState:
        """Observe, decide, take at most one step, persist. A backend or registry call that
        fails leaves the rollout holding (said in ``reason``) and is retried next tick."""
        with self.store.locked(name):
            state = self._load(name)
            if state.terminal:
                return state
            if self.driver is not None:  # raises while another controller drives it
                state.driver = self.driver.claim(state.driver, self.clock())
            try:
                if name not in self._reconciled:  # a restarted controller re-asserts traffic
                    if state.phase != PROMOTING and not state.abort_requested:
                        self.backend.set_weight(state)  # (a rollback in flight: finish it)
                    self._reconciled.add(name)
                self._step(state)
            except MleopsError as e:
                state.reason = f"holding: {e}"
                if not state.history or state.history[-1].get("error") != str(e):
                    state.event("error", error=str(e))
            self.store.save(state)
            return state

    def run(self, name: str, *, interval: float = 1.0, timeout: float | None = None,
            on_tick: Callable[[RolloutState], None] | None = None) -> RolloutState:
        """Tick until the rollout ends (or ``timeout`` seconds pass); the final state."""
        if not interval > 0:
            raise DataError(f"interval must be > 0 seconds, got {interval!r}")
        deadline = None if timeout is None else self.clock() + timeout
        mine = self._load(name).rollout_id
        self.driver = Driver(interval)
        try:
            return self._drive(name, mine, interval, deadline, on_tick)
        finally:
            self.driver = None

    def _drive(self, name, mine, interval, deadline, on_tick) -> RolloutState:
        while True:
            state = self.tick(name)
            if state.rollout_id != mine:  # report this rollout's outcome, not another's
                raise RolloutError(f"rollout {mine} of {name!r} was superseded by rollout "
                                   f"{state.rollout_id} (candidate version "
                                   f"{state.candidate_version})")
            if on_tick:
                on_tick(state)
            if state.terminal or (deadline is not None and self.clock() >= deadline):
                return state
            time.sleep(interval)

    # --- one step --------------------------------------------------------------------------
    def _step(self, state: RolloutState) -> None:
        g = Guardrails.from_dict(state.guardrails)
        if state.phase == PROMOTING:  # decided: finish it (registry, then traffic)
            return self._finish_promotion(state)
        if state.abort_requested:
            return self._rollback(state, state.abort_requested)
        counters = Counters(state.last_data_at, state.step_rows)
        try:
            obs = self.backend.read(state)
        except MleopsError as e:  # metrics source down: no evidence, so hold, then roll back
            d = unreadable(e, counters, self.clock(), g)
            return self._act(state, d)
        now = self.clock()
        d = weigh(state.test, TestConfig.from_dict(state.test_config), obs, g, counters, now)
        if d.test is not None:
            state.test, state.verdict = d.test, d.verdict.to_dict()
            state.guardrail_stats = d.stats
            state.last_data_at, state.step_rows = d.counters.last_data_at, d.counters.step_rows
        if d.action != CONTINUE:
            return self._act(state, d)
        if state.phase == WAITING:
            return self._promote(state) if state.confirmed else None
        if (d := settle(d, obs, g, now)).action != CONTINUE:
            return self._act(state, d)
        state.reason, verdict = d.reason, d.verdict
        last = state.step_index == len(state.steps) - 1
        # all split traffic to the canary is promotion in effect: it needs the evidence too
        needs_evidence = (not last and state.step_index + 2 == len(state.steps)
                          and state.mode == "split" and state.steps[-1] == 100)
        if not last and (not needs_evidence or verdict.decision == "not_worse"):
            state.step_index += 1
            state.weight, state.step_rows = state.steps[state.step_index], 0
            state.event("step", verdict=verdict.to_dict())
            self.backend.set_weight(state)
            return None
        d = conclude(d, g)  # last step, or 100% at the next: evidence decides
        if d.action == PROMOTE and state.confirm_before_promote and not state.confirmed:
            state.phase, state.reason = WAITING, ("evidence says not worse: waiting for "
                                                  "`mleops rollout confirm`")
            state.event("waiting_confirmation", verdict=verdict.to_dict())
        elif d.action == PROMOTE:
            self._promote(state)
        elif d.action == ROLLBACK:
            self._rollback(state, d.reason)
        else:
            state.reason = f"waiting for evidence before {'promotion' if last else '100%'}: " \
                           f"{verdict.reason}"
        return None

    def _act(self, state: RolloutState, d: Decision) -> None:
        """A stage's ROLLBACK rolls back; its HOLD says why in ``reason``."""
        if d.action == ROLLBACK:
            return self._rollback(state, d.reason)
        state.reason = d.reason
        return None

    def _rollback(self, state: RolloutState, reason: str, *,
                  outcome: str = "rolled_back") -> None:
        """Traffic back to the champion and the canary removed, then the version tagged. If
        the backend refuses, the rollback stays pending (``abort_requested``) and the next
        tick tries again: the state never claims a rollback the traffic does not show. The
        intent is saved before traffic moves, so a controller killed mid-rollback finishes
        it on resume instead of re-asserting the canary's old weight."""
        if not state.abort_requested:
            state.abort_requested = reason
            self.store.save(state)
        failpoints.hit("rollback.intent_saved")
        weight, state.weight = state.weight, 0
        try:
            self.backend.rollback(state)
        except MleopsError as e:
            state.weight, state.abort_requested = weight, reason
            state.reason = f"rollback pending ({e}): {reason}"
            state.event("rollback_failed", error=str(e))
            return
        state.phase, state.abort_requested = ROLLED_BACK, ""
        state.reason = f"rolled back: {reason}"
        state.event(outcome, reason=reason, verdict=state.verdict)
        self._tag(state, outcome, reason)

    def _promote(self, state: RolloutState) -> None:
        """The decision is saved first (phase ``promoting``), then the registry (it says what
        should serve), then traffic: both steps are idempotent, so a failure or a kill at any
        point is a retry at the next tick (or on resume), never a half-done promotion."""
        state.phase = PROMOTING
        state.event("promoting", verdict=state.verdict)
        self.store.save(state)
        failpoints.hit("promote.decided")
        self._finish_promotion(state)

    def _finish_promotion(self, state: RolloutState) -> None:
        try:
            # force: this rollout's own evidence outweighs an earlier rollout's rollback
            self.registry.promote(state.name, state.candidate_version, force=True)
        except MleopsError as e:
            state.reason = f"promotion pending: {e}"
            state.event("promotion_failed", error=str(e))
            return
        failpoints.hit("promote.registry_moved")
        state.weight = 100
        self.backend.promote(state)
        state.phase = PROMOTED
        state.reason = (f"promoted: version {state.candidate_version} is champion "
                        f"({state.verdict.get('reason', '')})")
        state.event("promoted", verdict=state.verdict)
        self._tag(state, "promoted", state.reason)

    def _tag(self, state: RolloutState, outcome: str, reason: str) -> None:
        try:
            self.registry.tag_version(state.name, state.candidate_version, {
                "mleops.rollout": outcome, "mleops.rollout_reason": reason[:4000],
                "mleops.rollout_stats": {"verdict": state.verdict,
                                         "guardrails": state.guardrail_stats,
                                         "mode": state.mode, "steps": state.steps}})
            if outcome != "promoted":  # a rolled-back version is nobody's challenger now
                self.registry.drop_alias(state.name, "challenger", state.candidate_version)
        except MleopsError as e:  # traffic is already safe; say the audit tag is missing
            state.event("tag_failed", error=str(e))

    def _load(self, name: str) -> RolloutState:
        state = self.store.load(name)
        if state is None:
            raise DataError(f"no rollout named {name!r}")
        return state


__all__ = ["Controller", "parse_steps"]
